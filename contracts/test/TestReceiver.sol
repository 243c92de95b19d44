// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title TestReceiver: a payout receiver for the Adjudicator tests (not deployed in production)
/// @notice Depending on its mode it accepts ETH, rejects it, burns all the gas it is given, or
/// re-enters a target contract with prepared calldata and logs what happened. The attack calldata
/// is kept as the code of a helper contract (one cold EXTCODECOPY) rather than in storage, so the
/// re-entry fits into the Adjudicator's payout stipend.
contract TestReceiver {
    enum Mode {
        Accept,
        Reject,
        Burn,
        Reenter
    }

    Mode public mode;
    address public target;
    address public attackCode;
    uint96 public attackValue;

    event Reentered(bool ok, bytes result);

    error Rejected();

    function setMode(Mode m) external {
        mode = m;
    }

    /// Re-enter `target_` with `data` (and `value` wei) from now on, whenever ETH arrives.
    function setAttack(address target_, bytes calldata data, uint96 value) external {
        // Creation code that returns the rest of itself: PUSH2 len DUP1 PUSH1 12 PUSH1 0 CODECOPY
        // PUSH1 0 RETURN. The stored code starts with a STOP byte so it never begins with 0xEF.
        bytes memory init = abi.encodePacked(
            hex"61", uint16(data.length + 1), hex"80600c6000396000f3", hex"00", data
        );
        address code;
        assembly ("memory-safe") {
            code := create(0, add(init, 32), mload(init))
        }
        require(code != address(0), "create failed");
        target = target_;
        attackCode = code;
        attackValue = value;
        mode = Mode.Reenter;
    }

    /// Call `withdraw(asset)` on `adjudicator` as this contract; bubbles a revert up.
    function callWithdraw(address adjudicator, address asset) external {
        (bool ok, bytes memory ret) = adjudicator.call(abi.encodeWithSignature("withdraw(address)", asset));
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
    }

    receive() external payable {
        Mode m = mode;
        if (m == Mode.Accept) return;
        if (m == Mode.Reject) revert Rejected();
        if (m == Mode.Burn) {
            uint256 i;
            while (gasleft() > 0) ++i;
        }
        address code = attackCode;
        uint256 size = code.code.length - 1;
        bytes memory data = new bytes(size);
        assembly ("memory-safe") {
            extcodecopy(code, add(data, 32), 1, size)
        }
        (bool ok, bytes memory ret) = target.call{value: attackValue}(data);
        emit Reentered(ok, ret);
    }
}
