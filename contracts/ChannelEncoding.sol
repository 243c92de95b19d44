// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ChannelEncoding: the Adjudicator's data types, identities, state hashes and shape checks
/// @notice Pure and view code only (no storage). A ledger channel is identified by
/// keccak256(abi.encode(block.chainid, address(this), params)), a virtual channel by
/// keccak256(abi.encode(block.chainid, address(this), virtualParams, uint256(1))): the preimages
/// differ in length, so the two kinds of ID never meet. States are signed (EIP-191) over their
/// hash: keccak256(abi.encode(state)), or for a state that locks funds for virtual channels
/// keccak256(abi.encode(keccak256(abi.encode(state)), keccak256(abi.encode(locked)))).
abstract contract ChannelEncoding {
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

    /// Funds of a parent (ledger) channel locked for one virtual channel: `balances[a]` of the
    /// parent's asset a; virtual participant j's outcome goes to parent participant `indexMap[j]`.
    struct SubAlloc {
        bytes32 id;
        uint256[] balances;
        uint8[2] indexMap;
    }

    /// A virtual channel between `participants`, funded by locks in the two `parents` (ledger IDs).
    struct VirtualParams {
        uint64 challengeDuration;
        uint256 nonce;
        address[2] participants;
        bytes32[2] parents;
    }

    address internal constant ETH = address(0);

    /// secp256k1n / 2: signatures with a higher s are malleable copies and are refused.
    uint256 internal constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    error InvalidAssets();
    error InvalidEncoding();
    error MalformedSignature(uint256 index);
    error InvalidSignature(uint256 index);
    error InvalidSubAlloc();

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

    /// @notice The ID of the virtual channel `vp` on this chain and this deployment.
    function idOfVirtualChannel(VirtualParams calldata vp) public view returns (bytes32 id) {
        uint256 dirty;
        assembly ("memory-safe") {
            dirty := or(
                shr(64, calldataload(vp)),
                or(shr(160, calldataload(add(vp, 0x40))), shr(160, calldataload(add(vp, 0x60))))
            )
            let m := mload(0x40)
            mstore(m, chainid())
            mstore(add(m, 0x20), address())
            calldatacopy(add(m, 0x40), vp, 0xc0)
            mstore(add(m, 0x100), 1)
            id := keccak256(m, 0x120)
        }
        if (dirty != 0) revert InvalidEncoding();
    }

    /// @notice keccak256(abi.encode(s)): what participants sign (EIP-191) for a state without locks.
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

    /// @notice What participants sign for a state with the sub-allocations `locked`: hashState(s)
    /// when nothing is locked (so ledger states hash as in v1), else
    /// keccak256(abi.encode(hashState(s), keccak256(abi.encode(locked)))).
    function hashSignedState(State calldata s, SubAlloc[] calldata locked) public pure returns (bytes32) {
        bytes32 h = hashState(s);
        if (locked.length == 0) return h;
        // Only the virtual-channel paths get here; Solidity's encoder re-validates every field.
        return keccak256(abi.encode(h, keccak256(abi.encode(locked))));
    }

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

    /// Each sub-allocation has one amount per asset of `s`, a permutation as index map, and its own ID.
    function _checkLocks(State calldata s, SubAlloc[] calldata locked) internal pure {
        uint256 n = s.assets.length;
        uint256 k = locked.length;
        for (uint256 i; i < k; ++i) {
            SubAlloc calldata lock = locked[i];
            if (lock.balances.length != n) revert InvalidSubAlloc();
            uint8 first = lock.indexMap[0];
            if (first > 1 || lock.indexMap[1] != 1 - first) revert InvalidSubAlloc();
            bytes32 id = lock.id;
            for (uint256 j; j < i; ++j) {
                if (locked[j].id == id) revert InvalidSubAlloc();
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
