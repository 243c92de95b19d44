// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title AssetTransfers: how the Adjudicator moves ETH and ERC20 tokens in and out
/// @notice Deposits pull tokens with `transferFrom` and credit exactly the amount or revert (the
/// Adjudicator's balance must grow by exactly that much: fee-on-transfer tokens are refused).
/// Payouts push with a bounded gas stipend; a payout the receiver or the token refuses is credited
/// to the receiver, who takes it with `withdraw`. Tokens that return no boolean (USDT-style) work:
/// a call counts as successful when it does not revert and returns nothing or a word equal to 1.
abstract contract AssetTransfers {
    /// An EIP-2612 permit for the Adjudicator, signed by the depositor.
    struct Permit {
        address token;
        uint256 value;
        uint256 deadline;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    address private constant NATIVE = address(0);

    /// Gas forwarded with each pushed ETH payout. Enough for common smart-contract wallets (a Safe
    /// proxy needs ~7k with a cold delegatecall and its event) and for a receiver that logs what it
    /// did; small enough that a hostile receiver can burn at most this much of the concluder's gas.
    uint256 internal constant PAYOUT_GAS = 30_000;
    /// Gas given to a token's `transfer` in a pushed payout: a standard token moving to a fresh
    /// holder needs ~35k, a proxied one (USDC) ~50k; a hostile token can burn at most this much.
    uint256 internal constant TOKEN_PAYOUT_GAS = 100_000;
    /// What a CALL may cost beyond the gas it forwards: cold account 2,600 + value 9,000 + new
    /// account 25,000, plus a margin for the code around it.
    uint256 internal constant CALL_OVERHEAD = 37_000;
    /// Gas that must be left before a push so that the receiver really gets its stipend: the
    /// stipend, the 1/64 the CALL keeps back, and the CALL's own cost.
    uint256 internal constant PAYOUT_GAS_NEEDED = PAYOUT_GAS + PAYOUT_GAS / 63 + CALL_OVERHEAD;
    uint256 internal constant TOKEN_PAYOUT_GAS_NEEDED = TOKEN_PAYOUT_GAS + TOKEN_PAYOUT_GAS / 63 + CALL_OVERHEAD;

    // Function selectors, right-aligned (assembly shifts them into place).
    uint256 private constant TRANSFER = 0xa9059cbb; // transfer(address,uint256)
    uint256 private constant TRANSFER_FROM = 0x23b872dd; // transferFrom(address,address,uint256)
    uint256 private constant BALANCE_OF = 0x70a08231; // balanceOf(address)
    uint256 private constant PERMIT = 0xd505accf; // permit(address,address,uint256,uint256,uint8,bytes32,bytes32)

    mapping(address receiver => mapping(address asset => uint256 amount)) internal _owed;

    event PaidOut(bytes32 indexed channelID, address indexed receiver, address asset, uint256 amount, bool pushed);
    event Withdrawn(address indexed receiver, address asset, uint256 amount);

    error InsufficientGas();
    error NothingOwed();
    error TransferFailed();
    error InvalidToken(address token);
    error TokenTransferFailed(address token);
    error TransferMismatch(uint256 expected, uint256 received);

    /// @notice What `withdraw(asset)` would pay `receiver`.
    function owed(address receiver, address asset) external view returns (uint256) {
        return _owed[receiver][asset];
    }

    /// @notice Pay msg.sender what it is owed in `asset` (payouts that could not be pushed).
    function withdraw(address asset) external {
        uint256 amount = _owed[msg.sender][asset];
        if (amount == 0) revert NothingOwed();
        _owed[msg.sender][asset] = 0;
        if (!_push(asset, msg.sender, amount, gasleft())) revert TransferFailed();
        emit Withdrawn(msg.sender, asset, amount);
    }

    /// Pull exactly `amount` of `token` from `from` into this contract, or revert.
    function _pullToken(address token, address from, uint256 amount) internal {
        uint256 before = _balanceOf(token);
        if (!_tokenCall(token, TRANSFER_FROM, from, amount, gasleft())) revert TokenTransferFailed(token);
        uint256 afterwards = _balanceOf(token);
        // A fee-on-transfer token credits less; a re-entrant one may have moved our balance too.
        if (afterwards < before || afterwards - before != amount) {
            revert TransferMismatch(amount, afterwards > before ? afterwards - before : 0);
        }
    }

    /// Execute a permit for msg.sender → this contract. Its failure is ignored: anyone who saw the
    /// permit may have executed it first, and the transferFrom that follows fails without allowance.
    function _permit(Permit calldata permit) internal {
        address token = permit.token;
        uint256 value = permit.value;
        uint256 deadline = permit.deadline;
        uint8 v = permit.v;
        bytes32 r = permit.r;
        bytes32 s = permit.s;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, shl(224, PERMIT))
            mstore(add(m, 0x04), caller())
            mstore(add(m, 0x24), address())
            mstore(add(m, 0x44), value)
            mstore(add(m, 0x64), deadline)
            mstore(add(m, 0x84), v)
            mstore(add(m, 0xa4), r)
            mstore(add(m, 0xc4), s)
            pop(call(gas(), token, 0, m, 0xe4, 0, 0))
        }
    }

    /// Push `amount` of `asset` to `to` with the payout stipend; credit it for `withdraw` if the
    /// receiver or the token refuses.
    function _pay(bytes32 id, address to, address asset, uint256 amount) internal {
        bool pushed;
        if (asset == NATIVE) {
            if (gasleft() < PAYOUT_GAS_NEEDED) revert InsufficientGas();
            assembly ("memory-safe") {
                pushed := call(PAYOUT_GAS, to, amount, 0, 0, 0, 0)
            }
        } else {
            if (gasleft() < TOKEN_PAYOUT_GAS_NEEDED) revert InsufficientGas();
            pushed = _tokenCall(asset, TRANSFER, to, amount, TOKEN_PAYOUT_GAS);
        }
        if (!pushed) _owed[to][asset] += amount;
        emit PaidOut(id, to, asset, amount, pushed);
    }

    /// Send `amount` of `asset` to `to` with at most `gasLimit` gas; false if it did not arrive.
    function _push(address asset, address to, uint256 amount, uint256 gasLimit) internal returns (bool ok) {
        if (asset != NATIVE) return _tokenCall(asset, TRANSFER, to, amount, gasLimit);
        assembly ("memory-safe") {
            ok := call(gasLimit, to, amount, 0, 0, 0, 0)
        }
    }

    /// This contract's balance of `token`; InvalidToken when it does not answer with a word.
    function _balanceOf(address token) private view returns (uint256 amount) {
        bool ok;
        assembly ("memory-safe") {
            mstore(0, shl(224, BALANCE_OF))
            mstore(4, address())
            // Two statements: Yul evaluates arguments right to left, so returndatasize() inside
            // and(...) would be read before the call.
            ok := staticcall(gas(), token, 0, 0x24, 0, 0x20)
            ok := and(ok, gt(returndatasize(), 0x1f))
            amount := mload(0)
        }
        if (!ok) revert InvalidToken(token);
    }

    /// `transfer(account, amount)` (selector TRANSFER) or `transferFrom(account, this, amount)`;
    /// true when the token did not revert and returned nothing or true. At most 32 bytes of
    /// return data are copied, so a token cannot make us pay for a huge answer.
    function _tokenCall(address token, uint256 selector, address account, uint256 amount, uint256 gasLimit)
        private
        returns (bool ok)
    {
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, shl(224, selector))
            mstore(add(m, 0x04), account)
            let size := 0x44
            switch eq(selector, TRANSFER_FROM)
            case 1 {
                mstore(add(m, 0x24), address())
                mstore(add(m, 0x44), amount)
                size := 0x64
            }
            default { mstore(add(m, 0x24), amount) }
            mstore(0, 0)
            ok := call(gasLimit, token, 0, m, size, 0, 0x20)
            if ok {
                switch returndatasize()
                // No answer counts only from code: a call to an empty account always "succeeds".
                case 0 { ok := gt(extcodesize(token), 0) }
                default { ok := and(gt(returndatasize(), 0x1f), eq(mload(0), 1)) }
            }
        }
    }
}
