// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AssetTransfers} from "./AssetTransfers.sol";
import {ChannelEncoding} from "./ChannelEncoding.sol";

/// @title Adjudicator: custody and settlement of two-party payment channels (perund docs/specification.md §2)
/// @notice One contract both holds the deposits (ETH and ERC20 tokens) and settles disputes,
/// including virtual channels funded by locks in two ledger channels (docs/protocol.md). Concluding
/// a channel pays both receivers in the same call (push, with a bounded gas stipend); a receiver
/// that refuses the transfer is credited for `withdraw`.
/// @dev Storage, per channel:
///  - `_holdings[channelID][asset]`: the two participants' deposits packed in one slot, participant
///    0 in the low 128 bits, participant 1 in the high 128 bits. The ETH slot doubles as the
///    channel's "concluded" flag: conclusion writes CONCLUDED there (one nonzero→nonzero write on
///    the cooperative path instead of a fresh zero→nonzero slot for a separate flag).
///  - `_disputes[id]`: (timeout, version, phase) packed in one slot plus the registered state hash
///    in a second, for ledger and virtual channels alike (their IDs never collide).
contract Adjudicator is ChannelEncoding, AssetTransfers {
    struct Dispute {
        uint64 timeout;
        uint64 version;
        uint8 phase;
        bytes32 stateHash;
    }

    uint8 internal constant PHASE_OPEN = 0;
    uint8 internal constant PHASE_DISPUTE = 1;
    uint8 internal constant PHASE_CONCLUDED = 2;

    /// The value of a channel's ETH holdings slot once the channel is concluded. Deposits keep each
    /// half below type(uint128).max, so no real holdings can equal it.
    uint256 internal constant CONCLUDED = type(uint256).max;
    uint256 internal constant HALF_MASK = type(uint128).max;
    /// The largest amount one participant may hold per asset and channel (all-ones is reserved).
    uint256 internal constant MAX_HOLDING = type(uint128).max - 1;

    mapping(bytes32 channelID => mapping(address asset => uint256 packed)) internal _holdings;
    mapping(bytes32 channelID => Dispute) internal _disputes;

    event Deposited(
        bytes32 indexed channelID, uint256 participantIndex, address asset, uint256 amount, uint256 holding
    );
    event Registered(bytes32 indexed channelID, uint64 version, uint64 timeout, bool isFinal, uint256[][] balances);
    event RegisteredLocks(bytes32 indexed channelID, uint64 version, SubAlloc[] locked);
    event Concluded(bytes32 indexed channelID, uint64 version);

    error InvalidParticipantIndex();
    error ZeroAmount();
    error ValueMismatch();
    error LengthMismatch();
    error HoldingOverflow();
    error ChannelConcluded();
    error ChannelIDMismatch();
    error StaleVersion(uint64 registered, uint64 given);
    error ChallengeTimedOut();
    error NotRegistered();
    error StateMismatch();
    error ChallengeNotOver(uint64 timeout);
    error NotFinal();
    error NotParent();
    error NotLocked();
    error SubAllocMismatch();
    error SubStatesMismatch();
    error SubChannelNotRegistered(bytes32 id);
    error SubStateMismatch(bytes32 id);
    error NotConcluded();
    error NothingToRefund();

    // ---------------------------------------------------------------- views

    /// @notice The deposits of participants 0 and 1 in `asset`. Once the channel is concluded: zero
    /// for ETH and for listed tokens, and what `refund` would pay back for an unlisted token.
    function holdings(bytes32 id, address asset) external view returns (uint256, uint256) {
        uint256 packed = _holdings[id][asset];
        if (asset == ETH && packed == CONCLUDED) return (0, 0);
        return (packed & HALF_MASK, packed >> 128);
    }

    /// @notice The dispute record. Once a ledger channel is concluded only the phase (2) is
    /// reported; the Concluded event carries the concluded version.
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

    /// @notice Add `amount` of `asset` (ETH as msg.value, or a token by transferFrom after an
    /// approve) to participant `participantIndex`'s holdings in a channel.
    function deposit(bytes32 id, uint256 participantIndex, address asset, uint256 amount) external payable {
        if (participantIndex > 1) revert InvalidParticipantIndex();
        if (amount == 0) revert ZeroAmount();
        if (asset == ETH) {
            if (msg.value != amount) revert ValueMismatch();
        } else {
            if (msg.value != 0) revert ValueMismatch();
            _pullToken(asset, msg.sender, amount);
        }
        _credit(id, participantIndex, asset, amount);
    }

    /// @notice Deposit `amounts[k]` of `assets[k]` for one participant, after executing `permits`
    /// (EIP-2612); msg.value must be the sum of the ETH amounts.
    function fundParticipant(
        bytes32 id,
        uint256 participantIndex,
        address[] calldata assets,
        uint256[] calldata amounts,
        Permit[] calldata permits
    ) external payable {
        if (participantIndex > 1) revert InvalidParticipantIndex();
        uint256 n = assets.length;
        if (amounts.length != n) revert LengthMismatch();
        uint256 eth;
        for (uint256 k; k < n; ++k) {
            if (assets[k] == ETH) eth += amounts[k];
        }
        if (msg.value != eth) revert ValueMismatch();
        for (uint256 k; k < permits.length; ++k) {
            _permit(permits[k]);
        }
        for (uint256 k; k < n; ++k) {
            address asset = assets[k];
            uint256 amount = amounts[k];
            if (amount == 0) revert ZeroAmount();
            if (asset != ETH) _pullToken(asset, msg.sender, amount);
            _credit(id, participantIndex, asset, amount);
        }
    }

    /// Book a deposit that has arrived. Reads the channel's slots only now, after any token call:
    /// a channel that a re-entrant call concluded meanwhile is refused, and nothing is stale.
    function _credit(bytes32 id, uint256 participantIndex, address asset, uint256 amount) internal {
        mapping(address => uint256) storage slots = _holdings[id];
        uint256 anchor = slots[ETH];
        if (anchor == CONCLUDED) revert ChannelConcluded();
        uint256 packed = asset == ETH ? anchor : slots[asset];
        uint256 shift = participantIndex * 128;
        uint256 holding = (packed >> shift) & HALF_MASK;
        if (amount > MAX_HOLDING - holding) revert HoldingOverflow();
        unchecked {
            holding += amount;
            slots[asset] = packed + (amount << shift);
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
        (bool recorded, uint64 timeout) = _record(id, p.challengeDuration, h, s.version);
        if (recorded) emit Registered(id, s.version, timeout, s.isFinal, s.balances);
    }

    /// @notice Register a parent state with its locks (as `register` would; without checking its
    /// signatures when it is the registered state), then the state `vs` of the virtual channel `vp`
    /// that the parent funds (start, refute or no-op, as for a ledger channel).
    function registerVirtualState(
        Params calldata p,
        State calldata s,
        SubAlloc[] calldata locked,
        bytes[2] calldata sigs,
        VirtualParams calldata vp,
        State calldata vs,
        bytes[2] calldata vsigs
    ) external {
        bytes32 parent = _registerParent(p, s, locked, sigs);
        bytes32 vid = idOfVirtualChannel(vp);
        if (vp.parents[0] != parent && vp.parents[1] != parent) revert NotParent();
        if (vs.channelID != vid) revert ChannelIDMismatch();
        _checkAssets(vs);
        uint256 k;
        while (k < locked.length && locked[k].id != vid) ++k;
        if (k == locked.length) revert NotLocked();
        _fit(s.assets, locked[k], vs, new uint256[2][](0));
        bytes32 h = hashState(vs);
        Dispute storage d = _disputes[vid];
        if (d.phase == PHASE_DISPUTE && d.stateHash == h) return; // the hash covers the version
        _checkSignatures(h, vp.participants, vsigs);
        (bool recorded, uint64 timeout) = _record(vid, vp.challengeDuration, h, vs.version);
        if (recorded) emit Registered(vid, vs.version, timeout, vs.isFinal, vs.balances);
    }

    /// The parent part of registerVirtualState; the parent's channel ID.
    function _registerParent(Params calldata p, State calldata s, SubAlloc[] calldata locked, bytes[2] calldata sigs)
        internal
        returns (bytes32 id)
    {
        id = channelID(p);
        if (s.channelID != id) revert ChannelIDMismatch();
        if (_holdings[id][ETH] == CONCLUDED) revert ChannelConcluded();
        _checkAssets(s);
        _checkLocks(s, locked);
        bytes32 h = hashSignedState(s, locked);
        Dispute storage d = _disputes[id];
        // The registered state was checked when it was registered; a party that holds only its own
        // signature on it can still register a virtual channel through it.
        if (d.phase == PHASE_DISPUTE && d.stateHash == h) return id;
        _checkSignatures(h, p.participants, sigs);
        (bool recorded, uint64 timeout) = _record(id, p.challengeDuration, h, s.version);
        if (recorded) {
            emit Registered(id, s.version, timeout, s.isFinal, s.balances);
            if (locked.length != 0) emit RegisteredLocks(id, s.version, locked);
        }
    }

    /// Start a dispute under `id` with state hash `h`, refute the registered state, or do nothing
    /// when `h` is the registered state (`recorded` false). The timeout is set once, at the start.
    function _record(bytes32 id, uint64 challengeDuration, bytes32 h, uint64 version)
        internal
        returns (bool recorded, uint64 timeout)
    {
        Dispute storage d = _disputes[id];
        timeout = d.timeout;
        if (d.phase == PHASE_OPEN) {
            uint256 t = block.timestamp + challengeDuration;
            timeout = t > type(uint64).max ? type(uint64).max : uint64(t);
        } else {
            uint64 registered = d.version;
            if (version == registered && d.stateHash == h) return (false, timeout);
            if (block.timestamp >= timeout) revert ChallengeTimedOut();
            if (version <= registered) revert StaleVersion(registered, version);
        }
        _disputes[id] = Dispute(timeout, version, PHASE_DISPUTE, h);
        recorded = true;
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
        _settle(id, anchor, p, s, new uint256[2][](0));
    }

    /// @notice Conclude a registered parent state with the registered state of each virtual channel
    /// it locks (`subStates[k]` for `locked[k]`), once the parent's timeout (unless it is final)
    /// and every virtual channel's timeout have passed. Each participant's outcome is its free
    /// balance plus the virtual outcomes of the virtual participants it stands for.
    function concludeParentState(Params calldata p, State calldata s, SubAlloc[] calldata locked, State[] calldata subStates)
        external
    {
        bytes32 id = channelID(p);
        uint256 anchor = _holdings[id][ETH];
        if (anchor == CONCLUDED) revert ChannelConcluded();
        Dispute storage d = _disputes[id];
        if (d.phase != PHASE_DISPUTE) revert NotRegistered();
        if (hashSignedState(s, locked) != d.stateHash) revert StateMismatch();
        uint64 timeout = d.timeout;
        if (!s.isFinal && block.timestamp < timeout) revert ChallengeNotOver(timeout);
        if (subStates.length != locked.length) revert SubStatesMismatch();
        uint256[2][] memory extra = new uint256[2][](s.assets.length);
        for (uint256 k; k < locked.length; ++k) {
            State calldata vs = subStates[k];
            bytes32 vid = vs.channelID;
            if (vid != locked[k].id) revert SubStatesMismatch();
            Dispute storage vd = _disputes[vid];
            if (vd.phase != PHASE_DISPUTE) revert SubChannelNotRegistered(vid);
            if (hashState(vs) != vd.stateHash) revert SubStateMismatch(vid);
            // Only the timeout freezes a virtual channel's record, so both parents read one state.
            if (block.timestamp < vd.timeout) revert ChallengeNotOver(vd.timeout);
            _fit(s.assets, locked[k], vs, extra);
        }
        delete _disputes[id];
        _settle(id, anchor, p, s, extra);
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
        _settle(id, anchor, p, s, new uint256[2][](0));
    }

    // ---------------------------------------------------------------- payout

    /// @notice Pay back the deposits of `token` in a concluded channel whose state did not list it
    /// (listed tokens were paid at the conclusion and their slots are zero). Anyone may call it.
    function refund(Params calldata p, address token) external {
        bytes32 id = channelID(p);
        if (_holdings[id][ETH] != CONCLUDED) revert NotConcluded();
        uint256 packed = token == ETH ? 0 : _holdings[id][token];
        if (packed == 0) revert NothingToRefund();
        _holdings[id][token] = 0;
        if (packed & HALF_MASK != 0) _pay(id, p.receivers[0], token, packed & HALF_MASK);
        if (packed >> 128 != 0) _pay(id, p.receivers[1], token, packed >> 128);
    }

    /// Mark the channel concluded (`anchor` is its ETH slot, checked not CONCLUDED), clear its
    /// holdings, then pay every asset to both receivers. The outcome of asset a for participant i
    /// is `s.balances[a][i]`, plus `extra[a][i]` when `extra` is not empty (virtual outcomes).
    /// All storage is written before the first transfer, so a re-entering receiver finds the
    /// channel concluded and nothing left to take.
    function _settle(bytes32 id, uint256 anchor, Params calldata p, State calldata s, uint256[2][] memory extra)
        internal
    {
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
            uint256[] calldata row = s.balances[a];
            // Ledger paths pass no extra: the branch keeps their cost at v1's.
            pay[a] = extra.length == 0
                ? _outcome(packed & HALF_MASK, packed >> 128, row[0], row[1])
                : _outcome(
                    packed & HALF_MASK,
                    packed >> 128,
                    _saturatingAdd(row[0], extra[a][0]),
                    _saturatingAdd(row[1], extra[a][1])
                );
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

    /// The virtual state `vs` fits `lock` in a parent with `parentAssets`: each of its assets is the
    /// parent's, its per-asset total is the locked amount, and nothing is locked for other assets.
    /// When `acc` is not empty, the virtual outcome is added to it, mapped to parent participants.
    function _fit(address[] calldata parentAssets, SubAlloc calldata lock, State calldata vs, uint256[2][] memory acc)
        internal
        pure
    {
        uint256 n = parentAssets.length;
        uint256[] calldata amounts = lock.balances;
        bool[] memory matched = new bool[](n);
        uint256 first = lock.indexMap[0]; // the parent participant standing for virtual participant 0
        bool accumulate = acc.length != 0;
        for (uint256 c; c < vs.assets.length; ++c) {
            address asset = vs.assets[c];
            uint256 a;
            while (a < n && parentAssets[a] != asset) ++a;
            if (a == n) revert SubAllocMismatch();
            uint256 v0 = vs.balances[c][0];
            uint256 v1 = vs.balances[c][1];
            uint256 total = amounts[a];
            if (v0 > total || v1 != total - v0) revert SubAllocMismatch();
            matched[a] = true;
            if (accumulate) {
                acc[a][first] = _saturatingAdd(acc[a][first], v0);
                acc[a][1 - first] = _saturatingAdd(acc[a][1 - first], v1);
            }
        }
        for (uint256 a; a < n; ++a) {
            if (!matched[a] && amounts[a] != 0) revert SubAllocMismatch();
        }
    }

    /// a + b, or 2^256 - 1 when that overflows: such an outcome can only be underfunded, and the
    /// payout rule then returns the deposits instead of the conclusion reverting forever.
    function _saturatingAdd(uint256 a, uint256 b) internal pure returns (uint256 c) {
        unchecked {
            c = a + b;
            if (c < a) c = type(uint256).max;
        }
    }
}
