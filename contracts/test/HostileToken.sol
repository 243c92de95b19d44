// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title HostileToken: an ERC20 that misbehaves on demand, to test the Adjudicator's defences
/// @notice For perund's tests only. In mode Normal it is a plain token. Otherwise `transfer` and
/// `transferFrom` (whichever `hostileOn` selects) return false, revert, burn all the gas they get,
/// return a huge answer, or re-enter `target` with prepared calldata (once per call, logging the
/// outcome) before doing their job. `balanceOf` stays honest: it is what the Adjudicator checks.
/// The attack calldata is kept as the code of a helper contract (one EXTCODECOPY), as in
/// TestReceiver, so that a re-entry fits into the Adjudicator's token payout stipend.
contract HostileToken {
    enum Mode {
        Normal,
        ReturnFalse,
        Revert,
        Burn,
        HugeReturn,
        Reenter
    }

    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    Mode public mode;
    /// Misbehave in transfer (true) or in transferFrom (false).
    bool public hostileOnTransfer;
    address public target;
    address public attackCode;
    bool private _inside;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event Reentered(bool ok, bytes result);

    function setMode(Mode m, bool onTransfer) external {
        mode = m;
        hostileOnTransfer = onTransfer;
    }

    /// Re-enter `target_` with `data` from inside transfer (or transferFrom) from now on.
    function setAttack(address target_, bytes calldata data, bool onTransfer) external {
        // Creation code that returns the rest of itself: PUSH2 len DUP1 PUSH1 12 PUSH1 0 CODECOPY
        // PUSH1 0 RETURN. The stored code starts with a STOP byte so it never begins with 0xEF.
        bytes memory init = abi.encodePacked(hex"61", uint16(data.length + 1), hex"80600c6000396000f3", hex"00", data);
        address code;
        assembly ("memory-safe") {
            code := create(0, add(init, 32), mload(init))
        }
        require(code != address(0), "create failed");
        target = target_;
        attackCode = code;
        mode = Mode.Reenter;
        hostileOnTransfer = onTransfer;
    }

    function mint(address to, uint256 value) external {
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transfer(address to, uint256 value) external returns (bool) {
        if (hostileOnTransfer && !_misbehave()) return false;
        _move(msg.sender, to, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        if (!hostileOnTransfer && !_misbehave()) return false;
        require(allowance[from][msg.sender] >= value, "allowance");
        allowance[from][msg.sender] -= value;
        _move(from, to, value);
        return true;
    }

    /// Act out the mode; false means "answer false".
    function _misbehave() internal returns (bool) {
        Mode m = mode;
        if (m == Mode.Normal) return true;
        if (m == Mode.ReturnFalse) return false;
        if (m == Mode.Revert) revert("hostile");
        if (m == Mode.Burn) {
            uint256 i;
            while (gasleft() > 0) ++i;
        }
        if (m == Mode.HugeReturn) {
            assembly {
                return(0, 100000)
            }
        }
        if (!_inside) {
            _inside = true;
            address code = attackCode;
            uint256 size = code.code.length - 1;
            bytes memory data = new bytes(size);
            assembly ("memory-safe") {
                extcodecopy(code, add(data, 32), 1, size)
            }
            (bool ok, bytes memory result) = target.call(data);
            _inside = false;
            emit Reentered(ok, result);
        }
        return true;
    }

    function _move(address from, address to, uint256 value) internal {
        require(balanceOf[from] >= value, "balance");
        balanceOf[from] -= value;
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }
}
