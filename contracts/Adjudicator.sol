// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Adjudicator: custody and settlement of two-party payment channels (perund PROTOCOL.md §2)
/// @notice One contract both holds the deposits and settles disputes. A channel is identified by
/// keccak256(abi.encode(block.chainid, address(this), params)); states are signed EIP-191 over
/// keccak256(abi.encode(state)). Concluding a channel pays both receivers in the same call (push,
/// with a bounded gas stipend); a receiver that refuses the transfer is credited for `withdraw`.
/// @dev Storage, per channel:
///  - `_holdings[channelID][asset]`: the two participants' deposits packed in one slot, participant
///    0 in the low 128 bits, participant 1 in the high 128 bits. The ETH slot doubles as the
///    channel's "concluded" flag: conclusion writes CONCLUDED there (one nonzero→nonzero write on
///    the cooperative path instead of a fresh zero→nonzero slot for a separate flag).
///  - `_disputes[channelID]`: (timeout, version, phase) packed in one slot plus the registered
///    state hash in a second; both are written only by `register`.
/// Asset address(0) is ETH. Any other asset reverts with UnsupportedAsset for now; the per-asset
/// storage and the `_pull`/`_push` helpers are where ERC20 `transferFrom`/`transfer` will go.
contract Adjudicator {
    struct Params {
        uint64 challengeDuration;
        uint256 nonce;
        address[2] participants;
        address[2] receivers;
    }

    struct State {
        bytes32 channelID;
        uint64 version;
        address[] assets;
        uint256[][] balances;
        bool isFinal;
    }

    struct Dispute {
        uint64 timeout;
        uint64 version;
        uint8 phase;
        bytes32 stateHash;
    }

    uint8 internal constant PHASE_OPEN = 0;
    uint8 internal constant PHASE_DISPUTE = 1;
    uint8 internal constant PHASE_CONCLUDED = 2;

    address internal constant ETH = address(0);

    /// The value of a channel's ETH holdings slot once the channel is concluded. Deposits keep each
    /// half below type(uint128).max, so no real holdings can equal it.
    uint256 internal constant CONCLUDED = type(uint256).max;
    uint256 internal constant HALF_MASK = type(uint128).max;
    /// The largest amount one participant may hold per asset and channel (all-ones is reserved).
    uint256 internal constant MAX_HOLDING = type(uint128).max - 1;

    /// Gas forwarded with each pushed payout. Enough for common smart-contract wallets (a Safe proxy
    /// needs ~7k with a cold delegatecall and its event) and for a receiver that logs what it did;
    /// small enough that a hostile receiver can burn at most this much of the concluder's gas.
    uint256 internal constant PAYOUT_GAS = 30_000;
    /// Gas that must be left before a push so that the receiver really gets PAYOUT_GAS: the CALL's
    /// own cost (cold account 2,600 + value 9,000 + new account 25,000) plus the 1/64 kept back.
    uint256 internal constant PAYOUT_GAS_NEEDED = PAYOUT_GAS + PAYOUT_GAS / 63 + 37_000;

    /// secp256k1n / 2: signatures with a higher s are malleable copies and are refused.
    uint256 internal constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    mapping(bytes32 channelID => mapping(address asset => uint256 packed)) internal _holdings;
    mapping(bytes32 channelID => Dispute) internal _disputes;
    mapping(address receiver => mapping(address asset => uint256 amount)) internal _owed;

    event Deposited(
        bytes32 indexed channelID, uint256 participantIndex, address asset, uint256 amount, uint256 holding
    );
    event Registered(bytes32 indexed channelID, uint64 version, uint64 timeout, bool isFinal, uint256[][] balances);
    event Concluded(bytes32 indexed channelID, uint64 version);
    event PaidOut(bytes32 indexed channelID, address indexed receiver, address asset, uint256 amount, bool pushed);
    event Withdrawn(address indexed receiver, address asset, uint256 amount);

    error InvalidParticipantIndex();
    error ZeroAmount();
    error ValueMismatch();
    error UnsupportedAsset(address asset);
    error HoldingOverflow();
    error ChannelConcluded();
    error ChannelIDMismatch();
    error InvalidAssets();
    error InvalidEncoding();
    error MalformedSignature(uint256 index);
    error InvalidSignature(uint256 index);
    error StaleVersion(uint64 registered, uint64 given);
    error ChallengeTimedOut();
    error NotRegistered();
    error StateMismatch();
    error ChallengeNotOver(uint64 timeout);
    error NotFinal();
    error InsufficientGas();
    error NothingOwed();
    error TransferFailed();

    // ---------------------------------------------------------------- views

    /// @notice The channel ID of `p` on this chain and this deployment.
    function channelID(Params calldata p) public view returns (bytes32 id) {
        // abi.encode(block.chainid, address(this), p) is chainid ‖ this ‖ the six words of p as
        // they are in calldata, provided these are clean (uint64 and addresses zero-padded).
        uint256 dirty;
        assembly ("memory-safe") {
            dirty := or(
                or(shr(64, calldataload(p)), shr(160, calldataload(add(p, 0x40)))),
                or(
                    shr(160, calldataload(add(p, 0x60))),
                    or(shr(160, calldataload(add(p, 0x80))), shr(160, calldataload(add(p, 0xa0))))
                )
            )
            let m := mload(0x40)
            mstore(m, chainid())
            mstore(add(m, 0x20), address())
            calldatacopy(add(m, 0x40), p, 0xc0)
            id := keccak256(m, 0x100)
        }
        if (dirty != 0) revert InvalidEncoding();
    }

    /// @notice keccak256(abi.encode(s)): what participants sign (EIP-191) and what `register` stores.
    function hashState(State calldata s) public pure returns (bytes32 h) {
        // The canonical encoding is rebuilt in memory from the decoded fields: the scalars through
        // Solidity's validating accessors, the addresses checked clean, the uint256 rows copied.
        // Whatever offsets the calldata used, the hash is that of abi.encode(s).
        bytes32 id = s.channelID;
        uint64 version = s.version;
        bool isFinal = s.isFinal;
        address[] calldata assets = s.assets;
        uint256[][] calldata balances = s.balances;
        uint256 n = assets.length;
        uint256 m;
        uint256 dirty;
        assembly ("memory-safe") {
            m := mload(0x40)
            mstore(m, 0x20)
            mstore(add(m, 0x20), id)
            mstore(add(m, 0x40), version)
            mstore(add(m, 0x60), 0xa0)
            mstore(add(m, 0x80), add(0xc0, shl(5, n)))
            mstore(add(m, 0xa0), isFinal)
            mstore(add(m, 0xc0), n)
            mstore(0x40, add(add(m, 0xe0), shl(5, n)))
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let a := calldataload(add(assets.offset, shl(5, i)))
                dirty := or(dirty, shr(160, a))
                mstore(add(add(m, 0xe0), shl(5, i)), a)
            }
        }
        if (dirty != 0) revert InvalidEncoding();
        uint256 q = m + 0xe0 + 32 * n; // the balances array: length, offsets, rows
        uint256 rows = balances.length;
        assembly ("memory-safe") {
            mstore(q, rows)
        }
        uint256 row = q + 32 + 32 * rows;
        // Keep the free memory pointer past what is written, as Solidity code runs in between.
        assembly ("memory-safe") {
            mstore(0x40, row)
        }
        for (uint256 k; k < rows; ++k) {
            uint256[] calldata b = balances[k];
            uint256 len = b.length;
            assembly ("memory-safe") {
                mstore(add(add(q, 0x20), shl(5, k)), sub(row, add(q, 0x20)))
                mstore(row, len)
                calldatacopy(add(row, 0x20), b.offset, shl(5, len))
                row := add(row, add(0x20, shl(5, len)))
                mstore(0x40, row)
            }
        }
        assembly ("memory-safe") {
            h := keccak256(m, sub(row, m))
        }
    }

    /// @notice The deposits of participants 0 and 1 in `asset` (zero once the channel is concluded).
    function holdings(bytes32 id, address asset) external view returns (uint256, uint256) {
        uint256 packed = _holdings[id][asset];
        if (_holdings[id][ETH] == CONCLUDED) return (0, 0);
        return (packed & HALF_MASK, packed >> 128);
    }

    /// @notice What `withdraw(asset)` would pay `receiver`.
    function owed(address receiver, address asset) external view returns (uint256) {
        return _owed[receiver][asset];
    }

    /// @notice The dispute record. Once concluded only the phase (2) is reported; the Concluded
    /// event carries the concluded version.
    function channelStatus(bytes32 id)
        external
        view
        returns (uint8 phase, uint64 version, uint64 timeout, bytes32 stateHash)
    {
        if (_holdings[id][ETH] == CONCLUDED) return (PHASE_CONCLUDED, 0, 0, bytes32(0));
        Dispute storage d = _disputes[id];
        return (d.phase, d.version, d.timeout, d.stateHash);
    }

    // ---------------------------------------------------------------- deposits

    /// @notice Add `amount` of `asset` to participant `participantIndex`'s holdings in a channel.
    function deposit(bytes32 id, uint256 participantIndex, address asset, uint256 amount) external payable {
        if (participantIndex > 1) revert InvalidParticipantIndex();
        if (amount == 0) revert ZeroAmount();
        if (asset != ETH) revert UnsupportedAsset(asset); // ERC20: check the ETH slot, then _pull
        if (msg.value != amount) revert ValueMismatch();
        uint256 packed = _holdings[id][ETH];
        if (packed == CONCLUDED) revert ChannelConcluded();
        uint256 shift = participantIndex * 128;
        uint256 holding = (packed >> shift) & HALF_MASK;
        if (amount > MAX_HOLDING - holding) revert HoldingOverflow();
        unchecked {
            holding += amount;
            _holdings[id][ETH] = packed + (amount << shift);
        }
        emit Deposited(id, participantIndex, asset, amount, holding);
    }

    // ---------------------------------------------------------------- disputes

    /// @notice Register a fully signed state, or refute a registered one with a higher version.
    /// Registering the state that is already registered is a no-op (no event).
    function register(Params calldata p, State calldata s, bytes[2] calldata sigs) external {
        bytes32 id = channelID(p);
        if (s.channelID != id) revert ChannelIDMismatch();
        if (_holdings[id][ETH] == CONCLUDED) revert ChannelConcluded();
        _checkAssets(s);
        bytes32 h = hashState(s);
        _checkSignatures(h, p.participants, sigs);

        Dispute storage d = _disputes[id];
        uint64 timeout = d.timeout;
        if (d.phase == PHASE_OPEN) {
            uint256 t = block.timestamp + p.challengeDuration;
            timeout = t > type(uint64).max ? type(uint64).max : uint64(t);
        } else {
            uint64 registered = d.version;
            if (s.version == registered && d.stateHash == h) return;
            if (block.timestamp >= timeout) revert ChallengeTimedOut();
            if (s.version <= registered) revert StaleVersion(registered, s.version);
        }
        _disputes[id] = Dispute(timeout, s.version, PHASE_DISPUTE, h);
        emit Registered(id, s.version, timeout, s.isFinal, s.balances);
    }

    /// @notice Conclude with the registered state after its timeout (at once if it is final).
    function conclude(Params calldata p, State calldata s) external {
        bytes32 id = channelID(p);
        uint256 anchor = _holdings[id][ETH];
        if (anchor == CONCLUDED) revert ChannelConcluded();
        Dispute storage d = _disputes[id];
        if (d.phase != PHASE_DISPUTE) revert NotRegistered();
        if (hashState(s) != d.stateHash) revert StateMismatch();
        uint64 timeout = d.timeout;
        if (!s.isFinal && block.timestamp < timeout) revert ChallengeNotOver(timeout);
        // The record is no longer needed once the ETH slot says CONCLUDED: clearing it refunds gas.
        delete _disputes[id];
        _settle(id, anchor, p, s);
    }

    /// @notice Conclude at once with a fully signed final state (also during a dispute).
    function concludeFinal(Params calldata p, State calldata s, bytes[2] calldata sigs) external {
        if (!s.isFinal) revert NotFinal();
        bytes32 id = channelID(p);
        if (s.channelID != id) revert ChannelIDMismatch();
        _checkAssets(s);
        _checkSignatures(hashState(s), p.participants, sigs);
        uint256 anchor = _holdings[id][ETH];
        if (anchor == CONCLUDED) revert ChannelConcluded();
        _settle(id, anchor, p, s);
    }

    // ---------------------------------------------------------------- payout

    /// @notice Pay msg.sender what it is owed in `asset` (payouts its receive function refused).
    function withdraw(address asset) external {
        uint256 amount = _owed[msg.sender][asset];
        if (amount == 0) revert NothingOwed();
        _owed[msg.sender][asset] = 0;
        if (!_push(asset, msg.sender, amount, gasleft())) revert TransferFailed();
        emit Withdrawn(msg.sender, asset, amount);
    }

    /// Mark the channel concluded (`anchor` is its ETH slot, checked not CONCLUDED), clear its
    /// holdings, then pay every asset to both receivers.
    /// All storage is written before the first transfer, so a re-entering receiver finds the
    /// channel concluded and nothing left to take.
    function _settle(bytes32 id, uint256 anchor, Params calldata p, State calldata s) internal {
        _holdings[id][ETH] = CONCLUDED;

        uint256 n = s.assets.length; // >= 1, checked when the state was registered or here
        uint256[2][] memory pay = new uint256[2][](n);
        bool ethListed;
        for (uint256 a; a < n; ++a) {
            address asset = s.assets[a];
            uint256 packed;
            if (asset == ETH) {
                packed = anchor; // ETH is always assets[0] (checked), and its slot is now CONCLUDED
                ethListed = true;
            } else {
                packed = _holdings[id][asset];
                if (packed != 0) _holdings[id][asset] = 0;
            }
            pay[a] = _outcome(packed & HALF_MASK, packed >> 128, s.balances[a][0], s.balances[a][1]);
        }
        emit Concluded(id, s.version);

        for (uint256 a; a < n; ++a) {
            address asset = s.assets[a];
            for (uint256 i; i < 2; ++i) {
                uint256 amount = pay[a][i];
                if (amount != 0) _pay(id, p.receivers[i], asset, amount);
            }
        }
        // ETH deposited into a channel whose state lists no ETH goes back to whoever deposited it,
        // instead of being locked under the CONCLUDED mark.
        if (!ethListed && anchor != 0) {
            if (anchor & HALF_MASK != 0) _pay(id, p.receivers[0], ETH, anchor & HALF_MASK);
            if (anchor >> 128 != 0) _pay(id, p.receivers[1], ETH, anchor >> 128);
        }
    }

    /// Push `amount` of `asset` to `to` with the payout stipend; credit it for `withdraw` if the
    /// receiver refuses.
    function _pay(bytes32 id, address to, address asset, uint256 amount) internal {
        if (gasleft() < PAYOUT_GAS_NEEDED) revert InsufficientGas();
        bool pushed = _push(asset, to, amount, PAYOUT_GAS);
        if (!pushed) _owed[to][asset] += amount;
        emit PaidOut(id, to, asset, amount, pushed);
    }

    /// What each participant receives from deposits d0, d1 and outcome balances o0, o1.
    /// Funded (d0 + d1 >= o0 + o1): each gets its outcome, and the surplus S goes back to whoever
    /// deposited more than its outcome: o_i + min(S, max(0, d_i - o_i)); the two sum to d0 + d1.
    /// Underfunded: each gets back exactly what it deposited.
    function _outcome(uint256 d0, uint256 d1, uint256 o0, uint256 o1) internal pure returns (uint256[2] memory r) {
        unchecked {
            uint256 held = d0 + d1; // each < 2^128: no overflow
            // o0 + o1 may overflow uint256, so compare without adding.
            if (o0 > held || o1 > held - o0) {
                r[0] = d0;
                r[1] = d1;
                return r;
            }
            uint256 surplus = held - o0 - o1;
            uint256 e0 = d0 > o0 ? d0 - o0 : 0;
            uint256 e1 = d1 > o1 ? d1 - o1 : 0;
            r[0] = o0 + (e0 < surplus ? e0 : surplus);
            r[1] = o1 + (e1 < surplus ? e1 : surplus);
        }
    }

    /// Send `amount` of `asset` to `to` with at most `gasLimit` gas; false if the receiver refused.
    function _push(address asset, address to, uint256 amount, uint256 gasLimit) internal returns (bool ok) {
        if (asset != ETH) revert UnsupportedAsset(asset); // ERC20: a bounded-gas transfer goes here
        assembly ("memory-safe") {
            ok := call(gasLimit, to, amount, 0, 0, 0, 0)
        }
    }

    // ---------------------------------------------------------------- checks

    /// One balance row of two per asset, ETH (if present) first, no asset twice.
    function _checkAssets(State calldata s) internal pure {
        uint256 n = s.assets.length;
        if (n == 0 || s.balances.length != n) revert InvalidAssets();
        for (uint256 a; a < n; ++a) {
            if (s.balances[a].length != 2) revert InvalidAssets();
            address asset = s.assets[a];
            if (a > 0) {
                if (asset == ETH) revert InvalidAssets();
                for (uint256 b; b < a; ++b) {
                    if (s.assets[b] == asset) revert InvalidAssets();
                }
            }
        }
    }

    /// Both participants signed the state with hash `h` (EIP-191, 65 bytes, v 27/28, low s).
    function _checkSignatures(bytes32 h, address[2] calldata participants, bytes[2] calldata sigs) internal pure {
        bytes32 digest;
        assembly ("memory-safe") {
            mstore(0, "\x19Ethereum Signed Message:\n32")
            mstore(28, h)
            digest := keccak256(0, 60)
        }
        for (uint256 i; i < 2; ++i) {
            bytes calldata sig = sigs[i];
            if (sig.length != 65) revert MalformedSignature(i);
            bytes32 r;
            bytes32 sv;
            uint8 v;
            assembly {
                r := calldataload(sig.offset)
                sv := calldataload(add(sig.offset, 32))
                v := byte(0, calldataload(add(sig.offset, 64)))
            }
            if (uint256(sv) > HALF_N || (v != 27 && v != 28)) revert MalformedSignature(i);
            address signer = ecrecover(digest, v, r, sv);
            if (signer == address(0) || signer != participants[i]) revert InvalidSignature(i);
        }
    }
}
