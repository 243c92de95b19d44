// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title NoBoolToken: an ERC20 whose transfer, transferFrom and approve return nothing, and whose
/// approve refuses to change a nonzero allowance to another (both as USDT's)
/// @notice For perund's tests only. Failures revert; success returns no data at all.
contract NoBoolToken {
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    function mint(address to, uint256 value) external {
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    function transfer(address to, uint256 value) external {
        _move(msg.sender, to, value);
    }

    function transferFrom(address from, address to, uint256 value) external {
        require(allowance[from][msg.sender] >= value, "allowance");
        allowance[from][msg.sender] -= value;
        _move(from, to, value);
    }

    function approve(address spender, uint256 value) external {
        // USDT's rule against front-running an allowance change: through zero, never from one
        // nonzero allowance straight to another.
        require(value == 0 || allowance[msg.sender][spender] == 0, "approve from nonzero");
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
    }

    function _move(address from, address to, uint256 value) internal {
        require(balanceOf[from] >= value, "balance");
        balanceOf[from] -= value;
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }
}
