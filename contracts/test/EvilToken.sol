// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title EvilToken: an ERC20 whose every misbehaviour is a switch open to anyone
/// @notice For perund's tests only (from the audit of hostile tokens): fees charged to the
/// receiver or the sender, `transfer` returning false or nothing, pauses, blocked accounts, a token
/// whose every call reverts (an upgraded proxy), `decimals()` that changes or reverts, rebasing.
contract EvilToken {
    mapping(address => uint256) internal _raw;
    mapping(address => mapping(address => uint256)) public allowance;
    mapping(address => bool) public blocked;

    uint256 public feeBps;          // fee burnt from what the receiver gets
    uint256 public senderFeeBps;    // extra fee charged to the sender on top of value
    uint8 public retMode;           // 0 bool true, 1 return false (no move), 2 return nothing
    bool public revertOnZero;
    bool public paused;
    bool public broken;             // every call reverts (a self-destructed / upgraded token)
    bool public decimalsReverts;
    uint8 internal _decimals = 18;
    uint256 public rebaseNum = 1;   // balanceOf = raw * num / den
    uint256 public rebaseDen = 1;
    string public symbol = "EVL";

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    modifier alive() { require(!broken, "broken"); _; }

    function setFee(uint256 bps) external { feeBps = bps; }
    function setSenderFee(uint256 bps) external { senderFeeBps = bps; }
    function setRetMode(uint8 m) external { retMode = m; }
    function setRevertOnZero(bool b) external { revertOnZero = b; }
    function setPaused(bool b) external { paused = b; }
    function setBroken(bool b) external { broken = b; }
    function setBlocked(address a, bool b) external { blocked[a] = b; }
    function setDecimals(uint8 d) external { _decimals = d; }
    function setDecimalsReverts(bool b) external { decimalsReverts = b; }
    function setRebase(uint256 num, uint256 den) external { rebaseNum = num; rebaseDen = den; }

    function decimals() external view alive returns (uint8) {
        require(!decimalsReverts, "no decimals");
        return _decimals;
    }

    function balanceOf(address a) external view alive returns (uint256) {
        return _raw[a] * rebaseNum / rebaseDen;
    }

    function rawBalance(address a) external view returns (uint256) { return _raw[a]; }

    function mint(address to, uint256 value) external {
        _raw[to] += value;
        emit Transfer(address(0), to, value);
    }

    function approve(address spender, uint256 value) external alive returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transfer(address to, uint256 value) external alive {
        if (!_check(msg.sender, to, value)) _ret(false);
        _move(msg.sender, to, value);
        _ret(true);
    }

    function transferFrom(address from, address to, uint256 value) external alive {
        if (!_check(from, to, value)) _ret(false);
        require(allowance[from][msg.sender] >= value, "allowance");
        allowance[from][msg.sender] -= value;
        _move(from, to, value);
        _ret(true);
    }

    function _check(address from, address to, uint256 value) internal view returns (bool) {
        if (revertOnZero && value == 0) revert("zero");
        require(!paused, "paused");
        require(!blocked[from] && !blocked[to], "blocked");
        if (retMode == 1) return false;
        return true;
    }

    function _ret(bool v) internal view {
        if (retMode == 2 && v) {
            assembly { return(0, 0) }
        }
        assembly {
            mstore(0, v)
            return(0, 32)
        }
    }

    /// Amounts are in "visible" units; the raw store is scaled back by the rebase factor.
    function _move(address from, address to, uint256 value) internal {
        uint256 rawValue = value * rebaseDen / rebaseNum;
        uint256 extra = rawValue * senderFeeBps / 10_000;
        require(_raw[from] >= rawValue + extra, "balance");
        uint256 fee = rawValue * feeBps / 10_000;
        _raw[from] -= rawValue + extra;
        _raw[to] += rawValue - fee;
        emit Transfer(from, to, value);
    }
}
