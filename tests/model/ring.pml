/*
 * ring.pml: Promela model of the lane ring protocol of rvoip-events (claim, commit, read, park/notify,
 * join, leave, recovery of a dead publisher), checked with spin by tests/model/check.sh.
 *
 * THIS MODEL MUST CHANGE TOGETHER WITH THE CODE. If you change any of the following, change the
 * matching part of this model (table in tests/model/README.md) and run tests/model/check.sh:
 *   shm/lane.hpp              LaneWriter::try_claim, commit, commit_in_place, abandon, notify / wake_parked;
 *                             LaneReader::peek / consume / release
 *   shm/topic_map.cpp         join_subscriber, leave_subscriber, recover_lane / recover_publisher
 *   client/parking.hpp        Parking::wait (parking: the lost-wake-up handshake, one subscription or a WaitSet), try_next
 * and, for the eviction of a stuck subscriber (configurations CFG_EVICT*, Broker `evict:`, Sub follow()):
 *   shm/topic_map.cpp         evict_subscriber (walk of committed records, seqlock on evictions, missed,
 *                             cursor CAS, undo of missed when it fails)
 *   shm/lane.hpp              LaneReader::release (the cursor CAS from published_), follow_eviction,
 *                             count_data
 *   client/rvoip/events.hpp, client/event_system.cpp   SubscriberCore::try_next (the evictions check),
 *                             SubscriberCore::follow_eviction (seqlock read, delivered vs. counted)
 *   daemon/monitor.cpp, daemon/liveness.cpp   EvictionMonitor::scan_lane (when: any moment, up to
 *                             EVICT_MAX times, and again while a publisher waits on a full lane),
 *                             Broker::Impl::evict_stuck (rings a first eviction's doorbell)
 * and, for exclusive lanes (configurations CFG_EXCLUSIVE*, XPub, Drain, the membarrier in Sub's park):
 *   shm/lane.hpp              LaneWriter with exclusive_: try_claim's plain tail store, notify (no fence
 *                             unless fenced_), gate() (a full fence before each refresh)
 *   client/parking.hpp        Parking::announce (membarrier after the parked bit, before the re-read)
 *   shm/membarrier.hpp        membarrier_registered / membarrier_global
 *
 * Scale (README.md): a ring of C = 4 units (a unit stands for 64 bytes), records of 1 or 2 units,
 * 2 publisher slots, 1 or 2 subscribers, 3 or 4 records (4 for one publisher: MAXR 4 in CFG_EXCLUSIVE*
 * and JOIN_LONG), one broker, at most one death. Every blocking
 * wait of the real code (futex, nap, "retry later", "full: retry later") is a guard here, and
 * positions and doorbells only grow (the tail goes back only by a give-back, once per short commit),
 * so every run is finite and ends in a state where nothing can move
 * (check.sh verifies that the small configurations have no cycle at all). Liveness ("eventually
 * everything is delivered") is therefore an assertion on that final state (process Final, which runs
 * on spin's `timeout`). Assertions carry a tag (@P1-..., @P2-..., @final-...) that check.sh reports.
 *
 * Build switches (check.sh passes them with -D):
 *   configuration (exactly one): CFG_BASIC, CFG_JOIN, CFG_PUBDEATH, CFG_GIVEBACK_DEATH, CFG_SUBDEATH,
 *                                CFG_MULTISLOT, CFG_EVICT (EVICT_ONEPUB: one publisher), CFG_EVICT_OTHER,
 *                                CFG_EVICT_DEATH, CFG_EXCLUSIVE, CFG_EXCLUSIVE_DEATH; EVICT_MAX=n bounds
 *                                the evictions
 *   exclusive lanes: SBD=n     store buffer depth (2 or 3; default 3)
 *                    EXCL_TWO  a second subscriber, subscribed from the start
 *                    EXCL_JOINS (CFG_EXCLUSIVE_DEATH) S0 joins through the broker instead
 *                    EXCL_FENCED  the publisher has no membarrier registration (fenced_): notify fences,
 *                              and the subscriber's membarrier does not reach it
 *                    EXCL_LOAN (CFG_EXCLUSIVE) the first record is a loan committed short
 *   exclusive-lane mutants (each must FAIL):
 *     MUT_EXCL_NO_MEMBARRIER     the parking subscriber skips the membarrier
 *     MUT_EXCL_MEMBARRIER_FIRST  it calls the membarrier before it sets its parked bit
 *     MUT_EXCL_NO_GATE_FENCE     the publisher refreshes its gate without the fence
 *   JOIN_LONG (CFG_JOIN)     publisher 1 alone: a loan committed short, then enough records to lap the
 *                            joiner's start (README.md: a join's first cursor above its start, fixed)
 *   MUT_JOIN_PLAIN_FIRST     join's first cursor is a plain read of the tail, not tail.fetch_or(join bit)
 *                            (the code before the model found it; must FAIL with JOIN_LONG or EXCL_LOAN)
 *   EVICT_UNPROTECTED_OK   drop @P1-read-protected (for mutants that break the re-check on purpose)
 *   MUT_EVICT_NO_RECHECK   try_next hands out a peeked record without re-checking `evictions`
 *   eviction mutants (each must FAIL):
 *     MUT_EVICT_PLAIN_STORE      the subscriber stores its cursor with a plain store, not a CAS
 *     MUT_EVICT_NO_UNDO          the broker does not take M back off missed when its CAS fails
 *     MUT_EVICT_NO_SUBTRACT      follow does not subtract what it delivered past its stored cursor
 *     MUT_EVICT_PAST_UNCOMMITTED the broker's walk steps over records that are not committed
 *     MUT_EVICT_NO_SEQLOCK       the subscriber reads missed and the cursor without the seqlock
 *   mutants: each re-introduces one bug, and check.sh requires each to FAIL:
 *     MUT_NO_GATE            publisher does not check the gate
 *     MUT_PARK_NO_RECHECK    subscriber re-checks the tail and the ring before announcing itself, not after
 *     MUT_NO_NAP             subscriber sleeps without timeout even when the tail shows a claim
 *     MUT_RECOVERY_NO_SCAN   recovery pads without first scanning live intents
 *     MUT_HOP_LIMIT          reader stops after two paddings (the old peek())
 *     MUT_FULL_KEEPS_INTENT  intent not cleared when the claim returns full
 *     MUT_JOIN_NO_REREAD     join starts at the tail it read before activating the slot
 *     MUT_JOIN_NO_BIT        join reads the tail without setting the join bit (a give-back may then move
 *                            the tail below the new subscriber's start)
 *     MUT_WON_UNBOUNDED      recovery trusts a dead claimant's won proof past its shrink_to (and so pads
 *                            over a live claim of bytes it gave back)
 *     MUT_NO_SHRINK_TO       recovery pads a dead short commit's intent across its shrink_to (into bytes
 *                            it gave back and another publisher claimed)
 *     MUT_LOOSE_MARKER       reader accepts a header of any lap at its index, not exactly its position
 *     MUT_LEAVE_KEEPS_SLOT   leave clears the parked bit but leaves the slot active
 *     MUT_POLLING_NAP        the nap ends at any time (a poll): the model gets cycles (acyclicity check)
 *   the protocol as the brief first stated it, refuted by this model (each also required to FAIL):
 *     SPEC_GATE_NO_INTENTS   the gate ignores claims in flight (min cursor, or tail if no subscriber)
 *     SPEC_NO_RELEASE_ON_EMPTY  the cursor is published after data only, not after skipped padding
 *     SPEC_NO_TAIL_CHECK     recovery checks `intent position < tail` once, not `Y < tail` at each step
 *     SPEC_NO_RING           recovery rings nobody (a publisher may die between commit and notify)
 *     SPEC_WON               recovery pads only if D.won == D.intent.position or D is the only dead claimant
 *     SPEC_LEAVE_ALONE       recovery ends the walk when no cursor is <= Y (fails with SPEC_GATE_NO_INTENTS)
 */

#define C      4      /* ring capacity in units */
#define NONE   255    /* "no position": never equal to a real one (positions stay below 20) */

#define P_ACTIVE 0
#define P_DEAD   1
#define P_FREE   2
#define S_FREE   0
#define S_ACTIVE 1

#define NOTREADY 0
#define GOT      1
#define HOP      2

/* ------------------------------------------------------------------------------------------------ */
/* Configurations. T0: the lane's tail when the model starts (1, so that wraps come early).           */

#define T0 1

#if defined(CFG_BASIC)
/* one subscriber, subscribed from the start; nobody dies. Publisher 1's 2-unit record is a loan that
   it commits short, as 1 unit: it gives the other unit back if nobody claimed after it, else writes it
   as trailing padding before the record. */
#define NSUB_RUN 1
#define PROC_OF(p) (p)
#define GIVE_BACK 1
#define WORKLOAD ncl[0] = 1; WL(0, 0, 0) = 1; WL(0, 0, 1) = 1; \
                 ncl[1] = 2; WL(1, 0, 0) = 2; SH(1, 0) = 1; WL(1, 1, 0) = 1
#elif defined(CFG_JOIN)
/* one subscriber, which joins through the broker while the publishers publish; nobody dies. Publisher
   1 commits a 2-unit loan short (with give-back, as in basic), then a 2-unit record. */
#define NSUB_RUN 1
#define S0_JOINS 1
#define GATE_SPLIT 1
#define GIVE_BACK 1
#define PROC_OF(p) (p)
#ifdef JOIN_LONG
/* a join's first cursor above its start (README, fixed): publisher 1 alone, a 2-unit loan committed short, a 2-unit record, then a
   batch of a 2-unit and a 1-unit record: enough to lap the joiner's start */
#define MAXR 4
#define WORKLOAD ncl[0] = 0; ncl[1] = 3; WL(1, 0, 0) = 2; SH(1, 0) = 1; WL(1, 1, 0) = 2; WL(1, 2, 0) = 2; WL(1, 2, 1) = 1
#else
#define WORKLOAD ncl[0] = 1; WL(0, 0, 0) = 1; WL(0, 0, 1) = 1; \
                 ncl[1] = 2; WL(1, 0, 0) = 2; SH(1, 0) = 1; WL(1, 1, 0) = 2
#endif
#elif defined(CFG_PUBDEATH)
/* one subscriber; either publisher process may die at any point. */
#define NSUB_RUN 1
#define KILL_PUB 1
#define PROC_OF(p) (p)
#elif defined(CFG_SUBDEATH)
/* two subscribers from the start; S0 may die at any point (S1 is the same process text: symmetric).
   One publisher (publisher 1: a 2-unit record, a 1-unit record, a 2-unit record): more than a ring's
   worth, so the dead subscriber's cursor holds it back until the broker frees the slot. */
#define NSUB_RUN 2
#define KILL_SUB 1
#define WORKLOAD ncl[0] = 0; ncl[1] = 3; WL(1, 0, 0) = 2; WL(1, 1, 0) = 1; WL(1, 2, 0) = 2
#define PROC_OF(p) (p)
#elif defined(CFG_GIVEBACK_DEATH)
/* one subscriber; either publisher process may die at any point. Publisher 1 commits a 2-unit loan
   short (give-back or trailing padding, with shrink_to), then a 1-unit record. */
#define NSUB_RUN 1
#define KILL_PUB 1
#define GIVE_BACK 1
#define PROC_OF(p) (p)
#define WORKLOAD ncl[0] = 1; WL(0, 0, 0) = 1; WL(0, 0, 1) = 1; \
                 ncl[1] = 2; WL(1, 0, 0) = 2; SH(1, 0) = 1; WL(1, 1, 0) = 1
#elif defined(CFG_MULTISLOT)
/* both publisher slots belong to ONE process, which may die at any point; publisher 1 publishes only
   its 2-unit record. */
#define NSUB_RUN 1
#define KILL_PUB 1
#define WORKLOAD ncl[0] = 1; WL(0, 0, 0) = 1; WL(0, 0, 1) = 1; ncl[1] = 1; WL(1, 0, 0) = 2
#define PROC_OF(p) 0
#elif defined(CFG_EVICT)
/* one subscriber, subscribed from the start, which the broker may evict (EVICT_MAX times at most, at any
   moment); nobody dies. Default workload (5 units: the ring wraps, so skipped records get lapped). */
#define NSUB_RUN 1
#define EV 0
#define PROC_OF(p) (p)
#ifdef EVICT_ONEPUB
#define WORKLOAD ncl[0] = 0; ncl[1] = 3; WL(1, 0, 0) = 2; WL(1, 1, 0) = 1; WL(1, 2, 0) = 2
#endif
#elif defined(CFG_EVICT_OTHER)
/* two subscribers from the start; the broker may evict S1, never S0, which must see every record as if
   nothing happened. One publisher: a 2-unit record, a 1-unit record, a 2-unit record (more than a ring). */
#define NSUB_RUN 2
#define EV 1
#define PROC_OF(p) (p)
#ifndef EVICT_MAX
#define EVICT_MAX 1
#endif
#define WORKLOAD ncl[0] = 0; ncl[1] = 3; WL(1, 0, 0) = 1; WL(1, 1, 0) = 2; WL(1, 2, 0) = 2
#elif defined(CFG_EVICT_DEATH)
/* one subscriber, which the broker may evict; either publisher process may die at any point, and the
   broker recovers it (eviction and recovery are both the broker's, one at a time). */
#define NSUB_RUN 1
#define EV 0
#define KILL_PUB 1
#define PROC_OF(p) (p)
#define WORKLOAD ncl[0] = 1; WL(0, 0, 0) = 1; ncl[1] = 2; WL(1, 0, 0) = 2; WL(1, 1, 0) = 2
#ifndef EVICT_MAX
#define EVICT_MAX 1
#endif
#elif defined(CFG_EXCLUSIVE)
/* an exclusive lane: publisher 0 holds it alone (XPub: claims by a plain store; its stores go through a
   TSO store buffer); publisher 1 does not run. S0 joins through the broker while publisher 0 publishes;
   nobody dies. Workload: a 1-unit record, a 2-unit record, then a batch of a 2-unit and a 1-unit record
   (4 records: MAXR 4; the batch refreshes the gate). EXCL_TWO: S1 is subscribed from the start too.
   EXCL_LOAN: the first record is a 2-unit loan committed short (1 unit: give-back, or trailing padding). */
#define EXCL 1
#ifdef EXCL_TWO
#define NSUB_RUN 2
#else
#define NSUB_RUN 1
#endif
#define S0_JOINS 1
#define MAXR 4
#define PROC_OF(p) (p)
#ifdef EXCL_LOAN
#define WORKLOAD ncl[0] = 3; WL(0, 0, 0) = 2; SH(0, 0) = 1; WL(0, 1, 0) = 2; WL(0, 2, 0) = 2; WL(0, 2, 1) = 1; \
                 ncl[1] = 0
#else
#define WORKLOAD ncl[0] = 3; WL(0, 0, 0) = 1; WL(0, 1, 0) = 2; WL(0, 2, 0) = 2; WL(0, 2, 1) = 1; ncl[1] = 0
#endif
#elif defined(CFG_EXCLUSIVE_DEATH)
/* an exclusive lane (as CFG_EXCLUSIVE), with its intents in the store buffer; one subscriber from the
   start (EXCL_JOINS: it joins through the broker; EXCL_TWO: two from the start); publisher 0 may die at
   any point, with stores still buffered, and the broker recovers it. Workload: a batch of two 1-unit
   records, a 2-unit record (it straddles the ring end: padding first), then a 1-unit record (4 records:
   MAXR 4); with EXCL_TWO only the batch and the 2-unit record. */
#define EXCL 1
#define EXCL_INTENTS 1
#ifdef EXCL_TWO
#define NSUB_RUN 2
#else
#define NSUB_RUN 1
#endif
#define KILL_PUB 1
#define PROC_OF(p) (p)
#ifdef EXCL_JOINS
#define S0_JOINS 1
#endif
#ifdef EXCL_TWO
#define WORKLOAD ncl[0] = 2; WL(0, 0, 0) = 1; WL(0, 0, 1) = 1; WL(0, 1, 0) = 2; ncl[1] = 0
#else
#define MAXR 4
#define WORKLOAD ncl[0] = 3; WL(0, 0, 0) = 1; WL(0, 0, 1) = 1; WL(0, 1, 0) = 2; WL(0, 2, 0) = 1; ncl[1] = 0
#endif
#else
#error "define one of CFG_BASIC, CFG_JOIN, CFG_PUBDEATH, CFG_GIVEBACK_DEATH, CFG_SUBDEATH, CFG_MULTISLOT, CFG_EVICT, CFG_EVICT_OTHER, CFG_EVICT_DEATH, CFG_EXCLUSIVE, CFG_EXCLUSIVE_DEATH"
#endif
#ifndef MAXR
#define MAXR 3            /* records per publisher, at most */
#endif
#ifdef EV
#define EVICT 1
#ifndef EVICT_MAX
#define EVICT_MAX 2       /* evict_subscriber calls that find something to skip, at most */
#endif
#endif
/* Workload. Default: publisher 0 claims one batch of two 1-unit records; publisher 1 claims a 2-unit
   record, then a 1-unit record. */
#ifndef WORKLOAD
#define WORKLOAD ncl[0] = 1; WL(0, 0, 0) = 1; WL(0, 0, 1) = 1; ncl[1] = 2; WL(1, 0, 0) = 2; WL(1, 1, 0) = 1
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Shared state                                                                                     */

byte tail;                 /* next position to claim */
bit  joinbit;              /* the join bit of the tail word (set by join, cleared by the next claim) */
byte hpos[C];              /* header marker: a reader at p accepts the header at p % C iff it holds p */
byte hlen[C];              /* units spanned (record length, or padding length) */
bit  hpad[C];              /* 1: padding, 0: data */
byte hpub[C];              /* publisher slot (data) */
byte hseq[C];              /* sequence number within the publisher (data) */

byte ipos[2];              /* intent, written only by the publisher, read by the broker */
byte ilen[2];
byte ishr[2];              /* intent's shrink_to (meaningful only strictly inside the intent's range) */
byte iwon[2];
byte pst[2];               /* publisher slot state, as the broker sees it */

byte sst[2];               /* subscriber slot state */
byte scur[2];              /* published cursor */
byte bell[2];              /* doorbell words */
byte mask;                 /* parked mask of the modelled lane (CursorHeader::parked[lane], one per lane
                              since ABI 6: lanes do not share it, so one lane's is the whole protocol): bit
                              j set while subscriber j is parked waiting for this lane. A consumer that does
                              not wait for a lane (WaitOptions::wake_lanes) never sets its bit and bounds
                              its sleep by deferred_delay (or batch_delay) instead: a timed nap, outside
                              this model. */
bool joinreq[2];           /* subscriber asked the broker to join */
bool joined[2];            /* join returned to the subscriber */

bool pdead[2];             /* process died (indexed by PROC_OF) */
bool marked[2];            /* broker has marked that process's publisher slots dead */
bool sdead[2];             /* subscriber process died */
bool left[2];              /* broker has run leave_subscriber for it */

#ifdef EVICT
/* eviction (shm::evict_subscriber, SubscriberCore::follow_eviction): the words of subscriber EV's slot */
byte evictions;            /* seqlock: odd while the broker writes missed and the cursor */
byte missed;               /* data records the broker skipped for it, in all */
byte nevict;               /* evict_subscriber calls made (bounded by EVICT_MAX, unless HOLDING) */
bit  evdone;               /* a first eviction happened (the monitor rang its doorbell) */
bit  pfull[2];             /* publisher p waits on a full lane (the monitor's "holding": full count moves) */
/* ghost, for the properties: what EV delivered, and what it was told it missed (Errc::lagged counts) */
byte ndel;
byte nlost;
#endif

/* broker's recovery walk, per dead slot */
byte ry[2];                /* NONE: not started */
byte rend[2];
bool wstop[2];

/* workload (constant after init) */
byte ncl[2];               /* claims per publisher */
byte wl[12];               /* wl[(p*3+k)*2+r]: length of record r of claim k of publisher p (0: none) */
#define WL(p, k, r) wl[((p) * 3 + (k)) * 2 + (r)]
byte shortlen[6];          /* a loan claimed for WL(p, k, 0) units, committed as shortlen[p*3+k] (0: none) */
#define SH(p, k) shortlen[(p) * 3 + (k)]

/* ghost state, for the properties only */
byte upos[C];              /* position whose bytes occupy each unit (NONE: nothing yet) */
byte recpos[2 * MAXR];     /* recpos[p*MAXR+s]: position of record s of publisher p */
byte reclen[2 * MAXR];
byte ncommitted[2];        /* records of p whose marker is stored (in sequence order) */
bool pdone[2];             /* publisher finished its workload */
bool started[2];           /* subscriber's start position chosen (spos valid) */
byte spos[2];              /* subscriber's read position (the LaneReader's position_) */
byte sstart[2];            /* subscriber's start */
byte nexp[4];              /* nexp[j*2+p]: next sequence expected by subscriber j from publisher p */

/* ------------------------------------------------------------------------------------------------ */
/* Helpers                                                                                          */

#define IDX(y)         ((y) % C)
#define COMMITTED(y)   (hpos[IDX(y)] == (y))
#define MIN2(a, b)     ((a) < (b) -> (a) : (b))
#define MAX2(a, b)     ((a) > (b) -> (a) : (b))
#define BIT(j)         (1 << (j))

/* layout: padding to the ring end first if a record of l units would straddle it */
#define PADN(t, l)     (((l) != 0 && IDX(t) + (l) > C) -> (C - IDX(t)) : 0)
#define END1(t, l)     ((t) + PADN(t, l) + (l))
#define END2(t, a, b)  END1(END1(t, a), b)

/* gate: min over ACTIVE subscribers' cursors, the tail, and (unless SPEC_GATE_NO_INTENTS) the start of
   every other publisher's claim in flight (its intent), so that a slow publisher's late commit never
   lands in bytes a later lap already reuses (see README: found by the join check). */
#define CURG(j)        ((sst[j] == S_ACTIVE) -> scur[j] : tail)
#ifdef SPEC_GATE_NO_INTENTS
#define INTG(k)        tail
#else
#define INTG(k)        ((ilen[k] != 0) -> ipos[k] : tail)
#endif
#define GATE_NOW(me)   MIN2(MIN2(tail, INTG(1 - (me))), MIN2(CURG(0), CURG(1)))
#define CURN(j)        ((sst[j] == S_ACTIVE) -> scur[j] : NONE)
#define MINCUR         MIN2(CURN(0), CURN(1))

#define COVERS(k, y)   (ilen[k] != 0 && ipos[k] <= (y) && (y) < ipos[k] + ilen[k])
#define LIVE_COVERS(y) ((pst[0] == P_ACTIVE && COVERS(0, y)) || (pst[1] == P_ACTIVE && COVERS(1, y)))
/* a short commit that gave [shrink_to, end) back leaves an intent of two pieces: never pad across */
#define SHRUNK(k)      (ishr[k] > ipos[k] && ishr[k] < ipos[k] + ilen[k])
#ifdef MUT_NO_SHRINK_TO
#define PIECE_END(k, y) (ipos[k] + ilen[k])
#else
#define PIECE_END(k, y) ((SHRUNK(k) && (y) < ishr[k]) -> ishr[k] : (ipos[k] + ilen[k]))
#endif
#define DEAD_END(k, y) ((pst[k] == P_DEAD && COVERS(k, y)) -> PIECE_END(k, y) : NONE)
#define OTHER_DEAD_COVERS(d, y) (pst[1 - (d)] == P_DEAD && COVERS(1 - (d), y))
/* A dead claimant whose CAS is proven (won == position) owns its range, up to shrink_to after a
 * give-back: a live intent over that part can only be a stale, failed one, and recovery need not wait
 * for it (recover_lane's `proven`). MUT_WON_UNBOUNDED trusts the proof past shrink_to. */
#ifdef MUT_WON_UNBOUNDED
#define PROVEN_K(k, y) (pst[k] == P_DEAD && iwon[k] == ipos[k] && COVERS(k, y))
#else
#define PROVEN_K(k, y) (pst[k] == P_DEAD && iwon[k] == ipos[k] && COVERS(k, y) && (!SHRUNK(k) || (y) < ishr[k]))
#endif
#define PROVEN(y)      (PROVEN_K(0, y) || PROVEN_K(1, y))

#define READING(j)     (started[j] && sst[j] == S_ACTIVE)
#define HOLDING        (pfull[0] || pfull[1])

/* Property 1: a write never destroys bytes that a reading subscriber has not read yet (the unit holds
 * nothing, the same position, or a position every reader is past), and never lands beyond the tail. */
#ifdef EVICT
/* An evicted subscriber gave up [read position, cursor): the broker skipped it (and counted it). What it
   still protects starts at the larger of the two (without eviction the cursor is never ahead). */
#define UNREAD(j)      ((j) == EV -> MAX2(spos[j], scur[j]) : spos[j])
#else
#define UNREAD(j)      spos[j]
#endif
#define UNIT_OK(j, y)  (!READING(j) || upos[IDX(y)] == NONE || upos[IDX(y)] == (y) || upos[IDX(y)] < UNREAD(j))
inline write_unit(y) {
  assert((y) < tail);                                    /* @P1-claimed-only */
  assert(UNIT_OK(0, y) && UNIT_OK(1, y));                /* @P1-no-overwrite */
  upos[IDX(y)] = (y)
}

/* A header is written in one step: its fields (and, for data, its payload unit), then its marker (the
 * release store) last. One step is enough in this sequentially consistent model: a reader that sees the
 * marker sees the fields (release/acquire), and the model has no two writers of one position. */
inline write_header(y, l, pad, who, sq) {
  write_unit(y);
  hlen[IDX(y)] = l; hpad[IDX(y)] = pad; hpub[IDX(y)] = who; hseq[IDX(y)] = sq;
  if
  :: !pad && l == 2 -> write_unit(y + 1); hpos[IDX(y + 1)] = NONE   /* payload bytes: no valid marker */
  :: else
  fi;
  hpos[IDX(y)] = y                                                  /* the marker, stored last */
}

/* ------------------------------------------------------------------------------------------------ */
/* Store buffer of the exclusive publisher (configurations CFG_EXCLUSIVE*): x86-TSO                   */

#ifdef EXCL
/* Its stores to the tail, to the headers (fields and marker: one entry, as write_header is one step)
 * and, with EXCL_INTENTS, to the intent and shrink_to enter a FIFO of SBD entries. Its own loads of the
 * tail see the newest buffered tail (store-to-load forwarding); every other process sees memory only.
 * Process Drain moves the oldest entry to memory at any moment. A locked RMW (the give-back CAS, a
 * doorbell's CAS) or a full fence of the publisher waits until the buffer is empty (`sbn == 0`);
 * membarrier(GLOBAL_EXPEDITED), called by a parking subscriber, empties it in one step (SB_DRAIN_ALL).
 * A full buffer stalls the publisher's next store until a drain. A real buffer is deeper; the bound
 * keeps the state space small (SBD 2 and 3 give the same verdicts; deeper is not checked). */
#ifndef SBD
#define SBD 3                    /* entries (2 or 3) */
#endif
#define SB_TAILK  1              /* tail.store(end): the whole word, so a join's bit set since is lost */
#define SB_INTENT 2              /* intent position, then length (release); a length of 0 alone: cleared */
#define SB_SHRINK 3              /* intent shrink_to */
#define SB_PAD    4              /* a padding header */
#define SB_DATA   5              /* a data record: fields and payload, then the marker */
byte sbn;                        /* entries in the buffer */
byte sbk[SBD];                   /* kind (0: unused) */
byte sbx[SBD];                   /* tail value, or position */
byte sbl[SBD];                   /* length */
byte sbq[SBD];                   /* sequence (data) */
#define SB_ROOM (sbn < SBD)
#define SB_ADD(kind, x, l, q) sbk[sbn] = kind; sbx[sbn] = x; sbl[sbn] = l; sbq[sbn] = q; sbn++
/* the publisher's own load of the tail: its newest buffered tail store, else memory (the join bit is
   masked off by the load: LaneWriter uses word & ~kJoinBit) */
#define SB_TAIL_AT(i) (sbn > (i) && sbk[i] == SB_TAILK)
#define SB_TAIL_UP2   (SB_TAIL_AT(1) -> sbx[1] : (SB_TAIL_AT(0) -> sbx[0] : tail))
#if SBD == 3
#define SB_TAIL       (SB_TAIL_AT(2) -> sbx[2] : SB_TAIL_UP2)
#elif SBD == 2
#define SB_TAIL       SB_TAIL_UP2
#else
#error "SBD must be 2 or 3"
#endif
/* move the oldest entry to memory. A zero length entry of kind SB_INTENT is the length store of
   finish() alone; otherwise position and length are one entry: the broker reads the length (acquire)
   first and ignores the position while the length is 0, which it is since the previous finish(). */
inline sb_drain() {
  if
  :: sbk[0] == SB_TAILK -> tail = sbx[0]; joinbit = 0
  :: sbk[0] == SB_INTENT -> if :: sbl[0] != 0 -> ipos[0] = sbx[0] :: else fi; ilen[0] = sbl[0]
  :: sbk[0] == SB_SHRINK -> ishr[0] = sbx[0]
  :: sbk[0] == SB_PAD -> write_header(sbx[0], sbl[0], 1, 0, 0)
  :: sbk[0] == SB_DATA -> write_header(sbx[0], sbl[0], 0, 0, sbq[0]); ncommitted[0]++
  fi;
  sbk[0] = sbk[1]; sbx[0] = sbx[1]; sbl[0] = sbl[1]; sbq[0] = sbq[1];
#if SBD == 3
  sbk[1] = sbk[2]; sbx[1] = sbx[2]; sbl[1] = sbl[2]; sbq[1] = sbq[2];
#endif
  sbk[SBD - 1] = 0; sbx[SBD - 1] = 0; sbl[SBD - 1] = 0; sbq[SBD - 1] = 0;
  sbn--
}
#define SB_DRAIN_ALL do :: sbn > 0 -> sb_drain() :: else -> break od
/* the broker learns of a death only after the dying thread entered the kernel, which drains its buffer */
#define SB_QUIET (sbn == 0)

proctype Drain() {
end_drain:
  do
  :: atomic { sbn > 0 -> sb_drain() }
  od
}
#else
#define SB_QUIET 1
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Publisher (LaneWriter::try_claim / commit / notify)                                              */

#define NREC(p, k) (WL(p, k, 1) != 0 -> 2 : 1)

proctype Pub(byte me) {
  byte k, r, t, e, g, pos, s, l, ph;
  bit tb;
claim:                                                        /* LaneWriter::try_claim */
  {
    atomic {
      if
      :: k == ncl[me] -> goto done
      :: else -> t = tail; tb = joinbit; e = END2(t, WL(me, k, 0), WL(me, k, 1))
      fi
    }
#ifndef MUT_NO_GATE
#ifdef GATE_SPLIT
    /* gate: the tail, then each slot's state and cursor, then the other publisher's intent (one read
       per step) */
    g = tail;
    atomic { if :: sst[0] == S_ACTIVE && scur[0] < g -> g = scur[0] :: else fi }
    atomic { if :: sst[1] == S_ACTIVE && scur[1] < g -> g = scur[1] :: else fi }
    atomic {
      if :: INTG(1 - me) < g -> g = INTG(1 - me) :: else fi;
#else
    atomic {
      g = GATE_NOW(me);                                       /* the gate, read in one step (see README) */
#endif
      if
      :: e > g + C -> g = 0; t = 0; tb = 0; e = 0; goto isfull
      :: else -> g = 0
      fi
    }
#endif
    ipos[me] = t;                                             /* the intent (relaxed stores ... */
    ilen[me] = e - t;
    atomic {                                                  /* ... ordered by the CAS(tail: t -> e), seq_cst) */
      if
      :: tail == t && joinbit == tb ->                        /* the whole word, join bit included */
        tail = e; joinbit = 0; tb = 0;
        pos = t + PADN(t, WL(me, k, 0));                      /* ghost: where the records go */
        recpos[me * MAXR + s] = pos; reclen[me * MAXR + s] = (SH(me, k) != 0 -> SH(me, k) : WL(me, k, 0));
        if
        :: WL(me, k, 1) != 0 ->
          pos = pos + WL(me, k, 0); pos = pos + PADN(pos, WL(me, k, 1));
          recpos[me * MAXR + s + 1] = pos; reclen[me * MAXR + s + 1] = WL(me, k, 1)
        :: else
        fi;
        pos = t; e = 0
      :: else -> t = 0; tb = 0; e = 0; goto claim             /* lost: the intent is rewritten next turn */
      fi
    }
    atomic { iwon[me] = t; t = 0 };                           /* won = position, after a successful CAS */
    /* LaneWriter::commit: one header per step, in order; padding first where a record would straddle
       the ring end; each header's marker stored last */
    do
    :: atomic {
        if
        :: r == NREC(me, k) -> r = 0; pos = 0; break
        :: else ->
          l = WL(me, k, r);
          if
          :: PADN(pos, l) != 0 -> l = PADN(pos, l); write_header(pos, l, 1, me, 0); pos = pos + l; l = 0
#ifdef GIVE_BACK
          :: PADN(pos, l) == 0 && SH(me, k) != 0 && ph == 0 ->  /* commit_in_place, short: shrink_to first */
            ishr[me] = pos + SH(me, k); ph = 3; l = 0
          :: PADN(pos, l) == 0 && SH(me, k) != 0 && ph == 3 ->  /* then give the rest back (CAS from */
            if                                                  /* exactly the claim's end, without the */
            :: tail == pos + l && !joinbit -> tail = pos + SH(me, k); ph = 2   /* join bit) */
            :: else -> ph = 1
            fi; l = 0
#else
          :: PADN(pos, l) == 0 && SH(me, k) != 0 && ph == 0 -> ph = 1; l = 0
#endif
          :: PADN(pos, l) == 0 && SH(me, k) != 0 && ph == 1 ->  /* ... or make it padding, written before */
            write_header(pos + SH(me, k), l - SH(me, k), 1, me, 0); ph = 2; l = 0   /* the record */
          :: PADN(pos, l) == 0 && SH(me, k) != 0 && ph == 2 ->
            write_header(pos, SH(me, k), 0, me, s); ncommitted[me]++; s++; pos = pos + l; r++; l = 0; ph = 0
          :: PADN(pos, l) == 0 && SH(me, k) == 0 ->
            write_header(pos, l, 0, me, s); ncommitted[me]++; s++; pos = pos + l; r++; l = 0
          fi
        fi
      }
    od;
    ilen[me] = 0;                                             /* finish(): the intent is done */
    atomic {                                                  /* notify: read the parked mask, ring */
      if :: mask & BIT(0) -> bell[0]++ :: else fi;            /* every set bit (one step, see README) */
      if :: mask & BIT(1) -> bell[1]++ :: else fi;
      k++
    }
    goto claim;

isfull:
#ifndef MUT_FULL_KEEPS_INTENT
    ilen[me] = 0;                                             /* clear the intent, return full */
#endif
#ifdef EVICT
    pfull[me] = 1;
    atomic { (END2(tail, WL(me, k, 0), WL(me, k, 1)) <= GATE_NOW(me) + C) -> pfull[me] = 0 };
#else
    (END2(tail, WL(me, k, 0), WL(me, k, 1)) <= GATE_NOW(me) + C); /* the caller retries later */
#endif
    goto claim;

done:
    pdone[me] = 1
  } unless { pdead[PROC_OF(me)] }
}

#ifdef EXCL
/* The exclusive publisher (LaneWriter with exclusive_, slot 0): the only publisher of the lane. Its
 * stores go through the store buffer above. try_claim: load the tail (forwarded); if the claim's end is
 * beyond the cached gate limit_, refresh it (gate(): a full fence, then gate_position: the tail, then
 * each slot; no other publisher's intent exists); write the intent (EXCL_INTENTS); store the tail (no
 * CAS; a join's bit set since the load is lost). commit / commit_in_place as Pub, each header one
 * buffered store, the give-back CAS a locked RMW. finish() clears the intent. notify: a compiler
 * barrier only, then a plain load of the parked mask (nothing drained); each doorbell's ring is a CAS. */
#define XL          WL(0, k, r)
#define XBUSY       (r != NREC(0, k))
#ifdef EXCL_INTENTS
#define SHR_ROOM    SB_ROOM
#define SB_ADD_SHRINK(x) SB_ADD(SB_SHRINK, x, 0, 0)
#else
#define SHR_ROOM    1
#define SB_ADD_SHRINK(x) skip            /* shrink_to is read by recovery only */
#endif

proctype XPub() {
  byte k, r, t, e, g, lim, pos, s, ph, pm;
  {
    atomic { lim = GATE_NOW(0) + C };                         /* LaneWriter(): limit_ = gate() + capacity */
claim:                                                        /* LaneWriter::try_claim */
    atomic {
      if
      :: k == ncl[0] -> goto done
      :: else -> t = SB_TAIL; e = END2(t, WL(0, k, 0), WL(0, k, 1))
      fi
    }
#ifndef MUT_NO_GATE
    if
    :: e > lim ->                                             /* beyond the cached gate: gate() */
#ifndef MUT_EXCL_NO_GATE_FENCE
      sbn == 0;                                               /* the full fence: waits for the buffer */
#endif
      g = SB_TAIL;                                            /* gate_position: the tail (own view) ... */
      atomic { if :: sst[0] == S_ACTIVE && scur[0] < g -> g = scur[0] :: else fi }   /* ... each slot */
      atomic {
        if :: sst[1] == S_ACTIVE && scur[1] < g -> g = scur[1] :: else fi;
        lim = g + C; g = 0;
        if
        :: e > lim -> t = 0; e = 0; goto isfull
        :: else
        fi
      }
    :: else
    fi;
#endif
#ifdef EXCL_INTENTS
    atomic { SB_ROOM -> SB_ADD(SB_INTENT, t, e - t, 0) };     /* the intent: position, then length */
#endif
    atomic {                                                  /* tail.store(end, release): no CAS */
      SB_ROOM -> SB_ADD(SB_TAILK, e, 0, 0);
      pos = t + PADN(t, WL(0, k, 0));                         /* ghost: where the records go */
      recpos[s] = pos; reclen[s] = (SH(0, k) != 0 -> SH(0, k) : WL(0, k, 0));
      if
      :: WL(0, k, 1) != 0 ->
        pos = pos + WL(0, k, 0); pos = pos + PADN(pos, WL(0, k, 1));
        recpos[s + 1] = pos; reclen[s + 1] = WL(0, k, 1)
      :: else
      fi;
      pos = t; t = 0; e = 0
    }
    /* (won = position is not modelled here: recovery needs it only against another live publisher) */
    do                                                        /* LaneWriter::commit / commit_in_place */
    :: atomic { !XBUSY -> r = 0; pos = 0; break }
    :: atomic { XBUSY && PADN(pos, XL) != 0 && SB_ROOM ->     /* padding to the ring end first */
        SB_ADD(SB_PAD, pos, PADN(pos, XL), 0); pos = pos + PADN(pos, XL) }
    :: atomic { XBUSY && PADN(pos, XL) == 0 && SH(0, k) == 0 && SB_ROOM ->
        SB_ADD(SB_DATA, pos, XL, s); s++; pos = pos + XL; r++ }
    :: atomic { XBUSY && PADN(pos, XL) == 0 && SH(0, k) != 0 && ph == 0 && SHR_ROOM ->
        SB_ADD_SHRINK(pos + SH(0, k)); ph = 3 }               /* short: shrink_to first */
    :: atomic { XBUSY && PADN(pos, XL) == 0 && SH(0, k) != 0 && ph == 3 && sbn == 0 ->
        if                                                    /* then the give-back CAS (locked: the */
        :: tail == pos + XL && !joinbit -> tail = pos + SH(0, k); ph = 2   /* buffer drained first) */
        :: else -> ph = 1
        fi }
    :: atomic { XBUSY && PADN(pos, XL) == 0 && SH(0, k) != 0 && ph == 1 && SB_ROOM ->
        SB_ADD(SB_PAD, pos + SH(0, k), XL - SH(0, k), 0); ph = 2 }   /* or trailing padding, first */
    :: atomic { XBUSY && PADN(pos, XL) == 0 && SH(0, k) != 0 && ph == 2 && SB_ROOM ->
        SB_ADD(SB_DATA, pos, SH(0, k), s); s++; pos = pos + XL; r++; ph = 0 }
    od;
#ifdef EXCL_INTENTS
    atomic { SB_ROOM -> SB_ADD(SB_INTENT, 0, 0, 0) };         /* finish(): intent length 0 */
#endif
#ifdef EXCL_FENCED
    sbn == 0;                                                 /* fenced_ (no membarrier): a full fence */
#endif
    pm = mask;                                                /* notify: a plain load, nothing drained */
    atomic {
      if
      :: pm == 0 -> k++
      :: pm != 0 && sbn == 0 ->                               /* wake_parked: each ring is a CAS (locked) */
        if :: pm & BIT(0) -> bell[0]++ :: else fi;
        if :: pm & BIT(1) -> bell[1]++ :: else fi;
        pm = 0; k++
      fi
    }
    goto claim;

isfull:                                                       /* full (refuse's intent length store writes */
    atomic {                                                  /* a 0 over a 0: not modelled); the caller */
                                                              /* retries later; its fenced refresh finds room */
      sbn == 0 && END2(tail, WL(0, k, 0), WL(0, k, 1)) <= GATE_NOW(0) + C -> lim = GATE_NOW(0) + C
    }
    goto claim;

done:
    pdone[0] = 1
  } unless { pdead[0] }
}
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Subscriber (LaneReader::peek / consume / release, SubscriberCore::next_for)                       */

/* Not-ready is reported only after looking at the header at the read position (or on a stale load). */
/* LaneReader::release: publish the cursor. With eviction, a CAS from the value it stored last (pub): if
 * the broker moved the cursor meanwhile, it stays where the broker put it until follow() takes it up. */
#ifdef EVICT
#ifdef MUT_EVICT_PLAIN_STORE
#define STORE_CURSOR \
  atomic { \
  if \
  :: j != EV || spos[j] != pub -> scur[j] = spos[j]; pub = spos[j]; dps = 0 \
  :: else \
  fi }
#else
#define STORE_CURSOR \
  atomic { \
  if \
  :: j != EV -> scur[j] = spos[j] \
  :: j == EV && spos[j] != pub && scur[j] == pub -> scur[j] = spos[j]; pub = spos[j]; dps = 0 \
  :: else                               /* nothing new, or the CAS failed: the broker moved it */ \
  fi }
#endif
#else
#define STORE_CURSOR scur[j] = spos[j]
#endif
#ifdef SPEC_NO_RELEASE_ON_EMPTY
#define RELEASE_EMPTY skip
#else
#define RELEASE_EMPTY STORE_CURSOR          /* lane empty: release the cursor (skipped padding too) */
#endif
#define NOT_READY_HERE(stale) \
  res = NOTREADY; assert(stale || !COMMITTED(spos[j])); RELEASE_EMPTY; i = 0; hops = 0; break

#ifdef MUT_LOOSE_MARKER
#define MARKER_OK(i) (hpos[i] != NONE && hpos[i] <= spos[j])   /* any lap's header at this index */
#else
#define MARKER_OK(i) (hpos[i] == spos[j])                      /* exactly our position */
#endif

#ifdef EVICT
#define IS_EV        (j == EV)
#define EV_DELIVERED ndel++; dps++       /* consumed_ (and since the last store) */
#ifdef EVICT_UNPROTECTED_OK
#define EV_PROTECTED skip
#else
#define EV_PROTECTED assert(spos[j] >= scur[j])
#endif
/* SubscriberCore::try_next re-loads `evictions` after the peek and hands the record out only if no
 * eviction began since it last followed one (MUT_EVICT_NO_RECHECK: the code before the model found it). */
#ifdef MUT_EVICT_NO_RECHECK
#define EV_RECHECK   0
#else
#define EV_RECHECK   (IS_EV && evictions != hev)
#endif
#else
#define IS_EV        0
#define EV_DELIVERED skip
#define EV_PROTECTED skip
#define EV_RECHECK   0
#endif

/* LaneReader::peek + consume: reads until data or not-ready, stepping over any number of paddings,
 * one header per step. With `weak`, a header load may return a stale marker (C++ allows it: the marker
 * is a release store and nothing orders it before this load; see README). */
inline read_lane(weak) {
  do
  :: atomic {
      i = IDX(spos[j]);
      if
      :: weak && COMMITTED(spos[j]) -> NOT_READY_HERE(1)     /* @P2-read-all */
      :: MARKER_OK(i) && hpad[i] ->
        spos[j] = spos[j] + hlen[i]; hops++; i = 0;
#ifdef MUT_HOP_LIMIT
        if :: hops == 2 -> NOT_READY_HERE(0) :: else fi       /* @P2-read-all */
#endif
      :: MARKER_OK(i) && !hpad[i] && EV_RECHECK ->            /* try_next's re-check after the peek: */
        NOT_READY_HERE(1)                                     /* an eviction since: follow it first */
      :: MARKER_OK(i) && !hpad[i] && !EV_RECHECK ->
        /* Property 2: the record read is the record committed at this position, and it is the next
         * one of its publisher (the first one at or after our start, if we have none yet). */
        p = hpub[i]; s = hseq[i];
        assert(p < 2 && s < MAXR);                                                 /* @P2-record */
        assert(recpos[p * MAXR + s] == spos[j] && reclen[p * MAXR + s] == hlen[i]); /* @P2-record */
        assert(upos[i] == spos[j] && (hlen[i] == 1 || upos[IDX(spos[j] + 1)] == spos[j] + 1)); /* @P2-record */
        if
        :: IS_EV ->
          /* evicted: records may be skipped (they are counted, see @final-exact), never repeated */
          assert(nexp[j * 2 + p] == NONE || s >= nexp[j * 2 + p]);                 /* @P2-order */
          /* it reads only what its cursor protects: never a position a publisher may be writing */
          EV_PROTECTED;                                                            /* @P1-read-protected */
          EV_DELIVERED
        :: else ->
          if
          :: nexp[j * 2 + p] == NONE -> assert(s == 0 || recpos[p * MAXR + s - 1] < sstart[j]) /* @P2-order */
          :: else -> assert(s == nexp[j * 2 + p])                                  /* @P2-order */
          fi
        fi;
        nexp[j * 2 + p] = s + 1;
        spos[j] = spos[j] + hlen[i];
        res = GOT; i = 0; hops = 0; p = 0; s = 0;
        break
      :: else -> NOT_READY_HERE(0)                            /* @P2-read-all */
      fi
    }
  od
}

#ifdef EVICT
/* SubscriberCore::try_next's check of `evictions` and SubscriberCore::follow_eviction (a seqlock read of
 * missed and the cursor), with LaneReader::follow_eviction for the lane. Subscriber EV only. Locals:
 * pub = published_, dps = consumed_ - consumed_at_store_, hev = handled_evictions_ (= seen_evictions_),
 * mseen = missed_seen_; fe, fm, fc: the values read; fy, fn: count_data and what was delivered. */
#ifdef MUT_EVICT_NO_SEQLOCK
#define EV_NEW     (j == EV && evictions != hev)              /* any change, odd or not */
#define EV_STABLE  1                                          /* no re-check */
#else
#define EV_NEW     (j == EV && evictions != hev && (evictions & 1) == 0)
#define EV_STABLE  (evictions == fe)
#endif
inline follow() {
  if
  :: atomic { EV_NEW -> fe = evictions }                      /* e = evictions (acquire): changed, even */
    atomic { fm = missed; fc = scur[j] };                     /* missed, then the lane's cursor */
    atomic {
      if
      :: EV_STABLE ->                                         /* evictions unchanged: a consistent read */
        if
        :: fc != pub ->                                       /* the broker moved it: LaneReader:: */
          if                                                  /* follow_eviction(cursor) */
          :: spos[j] <= fc -> spos[j] = fc; fn = 0            /* jump there */
          :: else ->                                          /* it read on past it: count_data(cursor, */
            fy = fc; fn = 0;                                  /* position), what it delivered beyond */
            do
            :: fy < spos[j] && hpos[IDX(fy)] == fy -> fn = fn + (hpad[IDX(fy)] -> 0 : 1); fy = fy + hlen[IDX(fy)]
            :: else -> break
            od;
            fn = MIN2(dps, fn)
          fi;
          fy = dps - fn;                                      /* delivered of what the broker counted */
          pub = fc; dps = fn
        :: else -> fy = 0
        fi;
#ifdef MUT_EVICT_NO_SUBTRACT
        fy = 0;
#endif
        /* the broker counted (missed - missed_seen) records, among them the fy it had delivered */
        assert(fm >= mseen && fm - mseen >= fy);              /* @evict-counted */
        nlost = nlost + (fm - mseen - fy);                    /* reported with Errc::lagged */
        mseen = fm; hev = fe
      :: else                                                 /* changed meanwhile: look again next time */
      fi;
      fe = 0; fm = 0; fc = 0; fy = 0; fn = 0
    }
  :: else
  fi
}
#define FOLLOW follow();
#define EV_PENDING EV_NEW
#else
#define FOLLOW
#define EV_PENDING 0
#endif

proctype Sub(byte j) {
  byte i, p, s, seen, hops, res;
  bool claimed;
#ifdef EVICT
  byte pub = T0;                                              /* it subscribed at T0 (no join here) */
  byte dps, hev, mseen, fe, fm, fc, fy, fn;
#endif
  {
    if
    :: !joined[j] -> joinreq[j] = 1; joined[j]                /* AddSubscriber: the broker joins us */
    :: else
    fi;
loop:
    FOLLOW                                                    /* try_next: evictions changed? */
    read_lane(0);                                             /* try_next */
    if
    :: atomic { res == GOT -> STORE_CURSOR; res = 0; goto loop }   /* consume + release */
    :: else
    fi;
    /* park: the lost-wake-up handshake */
#ifdef MUT_PARK_NO_RECHECK
    seen = bell[j];
    claimed = (tail != spos[j]);
    read_lane(claimed);
    if
    :: atomic { res == GOT -> scur[j] = spos[j]; res = 0; seen = 0; claimed = 0; goto loop }
    :: else
    fi;
    mask = mask | BIT(j);                                     /* announces itself only now */
#else
#ifdef MUT_EXCL_MEMBARRIER_FIRST
    atomic { SB_DRAIN_ALL };                                  /* the membarrier before the announcement */
#endif
    atomic { seen = bell[j]; mask = mask | BIT(j) };          /* seen = doorbell; announce (RMW, seq_cst) */
#if defined(EXCL) && !defined(MUT_EXCL_NO_MEMBARRIER) && !defined(EXCL_FENCED) && !defined(MUT_EXCL_MEMBARRIER_FIRST)
    atomic { SB_DRAIN_ALL };                                  /* exclusive lane: membarrier(GLOBAL_EXPEDITED) */
#endif
    claimed = (tail != spos[j]);                              /* re-read the tail ... */
    FOLLOW                                                    /* ... and re-try the read (try_next) */
    read_lane(claimed);
    if
    :: atomic { res == GOT -> mask = mask & ~BIT(j); res = 0; seen = 0; claimed = 0 };
      STORE_CURSOR;
      goto loop
    :: else
    fi;
#endif
#ifdef MUT_NO_NAP
    claimed = 0;
#endif
end_wait:                                                     /* a nap if the tail showed a claim (it */
    atomic {                                                  /* ends by itself), else a futex wait; */
#ifdef MUT_POLLING_NAP
      claimed || bell[j] != seen;                             /* the nap as a poll: ends any time */
#else
      (claimed && (bell[j] != seen || COMMITTED(spos[j]) || EV_PENDING)) || (!claimed && bell[j] != seen);
#endif
      mask = mask & ~BIT(j); seen = 0; claimed = 0; goto loop /* then unpark */
    }
  } unless { sdead[j] }
}

/* ------------------------------------------------------------------------------------------------ */
/* Broker (single-threaded: join, leave, recovery run one at a time)                                 */

#ifdef MUT_RECOVERY_NO_SCAN
#define LIVE_BLOCKS(d) 0
#else
#define LIVE_BLOCKS(d) (ry[d] != NONE && LIVE_COVERS(ry[d]) && !PROVEN(ry[d]))
#endif
#define RECOV_READY(d) (pst[d] == P_DEAD && !LIVE_BLOCKS(d) && !(wstop[d] && OTHER_DEAD_COVERS(d, ry[d])))

#define IDLE atomic { j = 0; d = 0; y = 0; e = 0; q = 0; m = 0; goto end_idle }

proctype Broker() {
  byte j, d, y, e, q, m;
end_idle:
  if
  :: atomic { joinreq[0] && !joined[0] -> j = 0; goto join }
  :: atomic { joinreq[1] && !joined[1] -> j = 1; goto join }
  :: atomic { sdead[0] && !left[0] && sst[0] == S_ACTIVE -> j = 0; left[0] = 1; goto leave }
  :: atomic { sdead[1] && !left[1] && sst[1] == S_ACTIVE -> j = 1; left[1] = 1; goto leave }
  :: atomic { pdead[0] && !marked[0] && SB_QUIET ->           /* mark all of the process's slots dead */
      marked[0] = 1;                                          /* before recovering any of them */
      if :: PROC_OF(0) == 0 -> pst[0] = P_DEAD :: else fi;
      if :: PROC_OF(1) == 0 -> pst[1] = P_DEAD :: else fi;
      goto end_idle }
  :: atomic { pdead[1] && !marked[1] && SB_QUIET ->
      marked[1] = 1;
      if :: PROC_OF(0) == 1 -> pst[0] = P_DEAD :: else fi;
      if :: PROC_OF(1) == 1 -> pst[1] = P_DEAD :: else fi;
      goto end_idle }
  :: atomic { RECOV_READY(0) -> d = 0; wstop[0] = 0; goto recover }
  :: atomic { RECOV_READY(1) -> d = 1; wstop[1] = 0; goto recover }
#ifdef EVICT
  /* the eviction monitor's tick (EvictionMonitor::scan_lane): at any moment, up to EVICT_MAX times, it
     reads EV's cursor (expected) and calls evict_subscriber, which reads the tail first. An attempt that
     would find nothing committed at the cursor writes nothing and is not modelled. Beyond EVICT_MAX it
     still evicts while EV holds the lane (a publisher waits on a full lane, HOLDING): the monitor never
     lets a subscriber hold publishers back for longer than evict_after. */
  :: atomic { (nevict < EVICT_MAX || HOLDING) && sst[EV] == S_ACTIVE && scur[EV] < tail && COMMITTED(scur[EV]) ->
      nevict++; y = scur[EV]; e = tail; q = y; m = 0; j = 0; goto evict }
#endif
  fi;

join:                                                         /* join_subscriber */
#ifdef MUT_JOIN_PLAIN_FIRST
  scur[j] = tail;                                             /* a plain read (the join before the fix) */
#else
  atomic { scur[j] = tail; joinbit = 1 };                     /* hold the gate at tail.fetch_or(join bit) */
#endif
  sst[j] = S_ACTIVE;                                          /* seq_cst */
#if defined(MUT_JOIN_NO_REREAD)
  atomic { sstart[j] = scur[j]; spos[j] = sstart[j]; started[j] = 1; joinbit = 1 }
#elif defined(MUT_JOIN_NO_BIT)
  atomic { sstart[j] = tail; spos[j] = sstart[j]; started[j] = 1 }   /* a plain re-read of the tail */
#else
  atomic { sstart[j] = tail; joinbit = 1; spos[j] = sstart[j]; started[j] = 1 }   /* start = tail.fetch_or(join bit) */
#endif
  scur[j] = sstart[j];
  atomic { joined[j] = 1; IDLE };

leave:                                                        /* leave_subscriber */
#ifndef MUT_LEAVE_KEEPS_SLOT
  sst[j] = S_FREE;
#endif
  atomic { mask = mask & ~BIT(j); IDLE };

recover:                                                      /* recover_publisher, slot d */
  atomic {
    if
    :: ry[d] == NONE && (ilen[d] == 0 || ipos[d] >= tail) -> goto rfinish   /* nothing in flight, or */
    :: ry[d] == NONE && !(ilen[d] == 0 || ipos[d] >= tail) ->               /* its CAS never happened */
      ry[d] = ipos[d]; rend[d] = ipos[d] + ilen[d]
    :: else
    fi
  }
rwalk:
  atomic {
    y = ry[d];
    if
    :: y >= rend[d] -> goto rfinish                           /* the walk reached the end of D's range */
    :: else
    fi
  }
#ifndef SPEC_NO_TAIL_CHECK
  if                                                          /* 1. re-read the tail: nothing beyond it */
  :: y >= tail -> goto rfinish                                /*    was claimed (a live publisher may be */
  :: else                                                     /*    about to claim it) */
  fi;
#endif
#ifndef MUT_RECOVERY_NO_SCAN
  if                                                          /* 2. scan every slot's intent */
  :: LIVE_COVERS(y) && !PROVEN(y) -> IDLE                     /*    a live publisher's claim: retry later */
  :: else
  fi;
#endif
  atomic {                                                    /* 3. committed: step over it */
    if
    :: COMMITTED(y) -> ry[d] = y + hlen[IDX(y)]; goto rwalk
    :: else
    fi
  }
#ifdef SPEC_WON
  atomic {
    if
    :: !(iwon[d] == ipos[d] || !OTHER_DEAD_COVERS(d, y)) -> wstop[d] = 1; IDLE
    :: else
    fi
  }
#endif
  atomic {                                                    /* 4. does anybody wait at or before y? */
    m = MINCUR;
    if
    :: m <= y -> m = 0
#ifdef SPEC_LEAVE_ALONE
    :: else -> m = 0; goto rfinish
#else
    :: else ->                                                /*    all are past y (its bytes may carry a */
      if                                                      /*    later lap): go on where the first of */
      :: m < rend[d] -> ry[d] = m; m = 0; goto rwalk          /*    them waits, if in D's range */
      :: else -> m = 0; goto rfinish
      fi
#endif
    fi
  }
  atomic {                                                    /* 5. pad [y, min end of dead claims covering y) */
    e = MIN2(DEAD_END(0, y), DEAD_END(1, y));
    q = MIN2(e, y + C - IDX(y))                               /*    split at the ring end */
  }
  atomic { write_header(y, q - y, 1, 2, 0) };
  if
  :: q < e -> atomic { write_header(q, e - q, 1, 2, 0) }
  :: else
  fi;
  atomic { ry[d] = e; y = 0; e = 0; q = 0; goto rwalk };

#ifdef EVICT
evict:                                                        /* shm::evict_subscriber(EV, expected = y): */
  atomic {                                                    /* the walk over the committed records from */
    do                                                        /* y, up to the tail e it read first, at */
    :: j < C && q < e && COMMITTED(q) && q + hlen[IDX(q)] <= e ->   /* most C of them (hops), in one step */
      m = m + (hpad[IDX(q)] -> 0 : 1); q = q + hlen[IDX(q)]; j++     /* M counts data, not padding */
#ifdef MUT_EVICT_PAST_UNCOMMITTED
    :: j < C && q < e && !COMMITTED(q) -> q = q + 1; j++      /* steps over what is not committed */
#endif
    :: else -> j = 0; break
    od;
    if
    :: q == y -> IDLE                                         /* nothing committed there */
    :: else
    fi
  }
  atomic { evictions = evictions | 1; missed = missed + m };  /* seqlock odd; missed += M */
  atomic {                                                    /* CAS cursor: expected -> Q */
    if
    :: scur[EV] == y -> scur[EV] = q; e = 1
    :: else -> e = 0
    fi
  }
  atomic {
#ifndef MUT_EVICT_NO_UNDO
    if
    :: e == 0 -> missed = missed - m                          /* CAS failed: take M back off */
    :: else
    fi;
#endif
    evictions = evictions + 1;                                /* even again (release) */
    if                                                        /* evict_stuck rings a first eviction's */
    :: e == 1 && !evdone -> bell[EV]++; evdone = 1            /* doorbell; a follow-up (the subscriber */
    :: e == 1 && evdone -> bell[EV]++                         /* still away) is not rung; after the */
    :: e == 1 && evdone -> skip                               /* first, either may happen */
    :: else
    fi;
    IDLE
  }
#endif

rfinish:                                                      /* clear D's intent, free the slot */
  ilen[d] = 0;
  atomic { pst[d] = P_FREE; ry[d] = NONE; y = 0 };
#ifndef SPEC_NO_RING
  atomic {                                                    /* it may have died before its notify */
    if :: mask & BIT(0) -> bell[0]++ :: else fi;
    if :: mask & BIT(1) -> bell[1]++ :: else fi
  };
#endif
  IDLE
}

/* ------------------------------------------------------------------------------------------------ */
/* Deaths: at most one process dies, at any point                                                   */

#if defined(KILL_PUB) || defined(KILL_SUB)
proctype Killer() {
  if
#ifdef KILL_PUB
  :: pdead[PROC_OF(0)] = 1
#ifndef EXCL
  :: pdead[PROC_OF(1)] = 1
#endif
#endif
#ifdef KILL_SUB
  :: sdead[0] = 1
#endif
  fi
}
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Final state: nothing can move any more. Properties 3, 4, 5 ("eventually").                        */

#define GOT_ALL(j, p) (ncommitted[p] == 0 || recpos[(p) * MAXR + ncommitted[p] - 1] < sstart[j] || \
                       nexp[(j) * 2 + (p)] == ncommitted[p])
#define SURVIVOR(j)   (started[j] && !sdead[j])

#ifdef EVICT
#define NOT_EV(j) ((j) != EV)
#else
#define NOT_EV(j) 1
#endif

proctype Final() {
  atomic {
    timeout ->
    /* every surviving subscriber received every committed record at or after its start */
    assert(!SURVIVOR(0) || !NOT_EV(0) || (GOT_ALL(0, 0) && GOT_ALL(0, 1)));    /* @final-all-delivered */
    assert(!SURVIVOR(1) || !NOT_EV(1) || (GOT_ALL(1, 0) && GOT_ALL(1, 1)));    /* @final-all-delivered */
#ifdef EVICT
    /* the evicted subscriber (subscribed at T0, before any record): every committed record was either
       delivered (once: @P2-order) or reported missed, exactly */
    assert(!SURVIVOR(EV) || ndel + nlost == ncommitted[0] + ncommitted[1]);  /* @final-exact */
#endif
    /* every surviving publisher finished (nobody stuck on a full lane) */
    assert(pdone[0] || pdead[PROC_OF(0)]);                       /* @final-publishers-done */
    assert(pdone[1] || pdead[PROC_OF(1)]);                       /* @final-publishers-done */
    /* every dead publisher slot was recovered, every dead subscriber left */
    assert(!pdead[PROC_OF(0)] || pst[0] == P_FREE);              /* @final-dead-recovered */
    assert(!pdead[PROC_OF(1)] || pst[1] == P_FREE);              /* @final-dead-recovered */
    assert(!sdead[0] || sst[0] == S_FREE);                       /* @final-dead-left */
    assert(!sdead[1] || sst[1] == S_FREE)                        /* @final-dead-left */
  }
}

init {
  byte i;
  atomic {
    tail = T0;
    for (i : 0 .. C - 1) { hpos[i] = NONE; upos[i] = NONE }
    for (i : 0 .. 3) { nexp[i] = NONE }
    ry[0] = NONE; ry[1] = NONE; iwon[0] = NONE; iwon[1] = NONE;
    WORKLOAD;
    /* S0 (and S1 unless it joins later) subscribed at T0 */
    for (i : 0 .. NSUB_RUN - 1) {
      sst[i] = S_ACTIVE; scur[i] = T0; spos[i] = T0; sstart[i] = T0; started[i] = 1; joined[i] = 1
    }
#ifdef S0_JOINS
    sst[0] = S_FREE; scur[0] = 0; spos[0] = 0; sstart[0] = 0; started[0] = 0; joined[0] = 0;
#endif
#ifdef EXCL
    pst[1] = P_FREE; pdone[1] = 1;                            /* the lane's only publisher is slot 0 */
    run XPub(); run Drain();
#else
    run Pub(0); run Pub(1);
#endif
    for (i : 0 .. NSUB_RUN - 1) { run Sub(i) }
    run Broker();
#if defined(KILL_PUB) || defined(KILL_SUB)
    run Killer();
#endif
    run Final()
  }
}
