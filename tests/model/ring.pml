/*
 * ring.pml: Promela model of the lane ring protocol of rvoip-events (claim / commit / read / park /
 * join / leave / recovery of a dead publisher), checked with spin by tests/model/check.sh.
 *
 * THIS MODEL MUST CHANGE TOGETHER WITH THE CODE. If you change any of the following, change the
 * matching part of this model (table in tests/model/README.md) and run tests/model/check.sh:
 *   shm/lane.hpp              LaneWriter::try_claim, commit, commit_in_place, abandon, notify / wake_parked;
 *                             LaneReader::peek / consume / release
 *   shm/topic_map.cpp         join_subscriber, leave_subscriber, recover_lane / recover_publisher
 *   client/event_system.cpp   SubscriberCore::next_for (parking: the lost-wake-up handshake)
 *
 * Scale (see README.md): a ring of C = 4 units (a unit stands for 64 bytes), records of 1 or 2 units,
 * 2 publisher slots, 1 or 2 subscribers, 4 records in all, one broker. Every blocking wait of the
 * real code (futex, nap, "retry later", "full: retry later") is a guard here, and positions and
 * doorbells only grow, so every run is finite and ends in a state where nothing can move: liveness
 * ("eventually everything is delivered") is checked as a safety property of that final state
 * (process Final, which runs on spin's `timeout`).
 *
 * Build switches (check.sh passes them with -D):
 *   configuration: CFG_BASIC, CFG_JOIN, CFG_PUBDEATH, CFG_SUBDEATH, CFG_MULTISLOT (exactly one)
 *   mutants (each re-introduces one bug; check.sh requires every one of them to FAIL):
 *     MUT_NO_GATE            publisher does not check the gate
 *     MUT_PARK_NO_RECHECK    subscriber re-checks before announcing itself in the parked mask, not after
 *     MUT_NO_NAP             subscriber sleeps without timeout even when the tail shows a claim
 *     MUT_RECOVERY_NO_SCAN   recovery pads without first scanning live intents
 *     MUT_HOP_LIMIT          reader stops after two paddings (the old peek())
 *     MUT_FULL_KEEPS_INTENT  intent not cleared when the claim returns full
 *     MUT_JOIN_NO_REREAD     join starts at the tail read before activation (no re-read)
 *   the brief's spec as first written, each of which the model refutes (also required to FAIL):
 *     SPEC_NO_TAIL_CHECK     recovery checks `intent position < tail` once, not `Y < tail` at each step
 *     SPEC_LEAVE_ALONE       recovery ends the walk when no cursor is <= Y
 *     SPEC_NO_RING           recovery rings nobody
 *     SPEC_WON               recovery pads only if D.won == D.intent.position or D is the only dead claimant
 */

#define C      4      /* ring capacity in units */
#define NONE   255    /* "no position": never equal to a real one (positions stay below 20) */
#define MAXR   3      /* records per publisher, at most */

#define P_ACTIVE 0
#define P_DEAD   1
#define P_FREE   2
#define S_FREE   0
#define S_ACTIVE 1

#define NOTREADY 0
#define GOT      1
#define HOP      2

/* ------------------------------------------------------------------------------------------------ */
/* Configurations. T0: the lane's tail when the model starts (1: the first wraps come early).        */
/* Workload (in init): publisher 0 claims one batch of two 1-unit records; publisher 1 claims a      */
/* 2-unit record, then a 1-unit record.                                                              */

#define T0 1

#if defined(CFG_BASIC)
/* one subscriber, subscribed from the start; nobody dies. */
#define NSUB_RUN 1
#define PROC_OF(p) (p)
#elif defined(CFG_JOIN)
/* S0 is subscribed from the start; S1 joins through the broker while the publishers publish. */
#define NSUB_RUN 2
#define S1_JOINS 1
#define PROC_OF(p) (p)
#elif defined(CFG_PUBDEATH)
/* one subscriber; either publisher process may die at any point (or none). */
#define NSUB_RUN 1
#define KILL_PUB 1
#define PROC_OF(p) (p)
#elif defined(CFG_SUBDEATH)
/* two subscribers from the start; either may die at any point (or none). */
#define NSUB_RUN 2
#define KILL_SUB 1
#define PROC_OF(p) (p)
#elif defined(CFG_MULTISLOT)
/* both publisher slots belong to ONE process, which may die at any point (or not). */
#define NSUB_RUN 1
#define KILL_PUB 1
#define PROC_OF(p) 0
#else
#error "define one of CFG_BASIC, CFG_JOIN, CFG_PUBDEATH, CFG_SUBDEATH, CFG_MULTISLOT"
#endif
#ifdef KILL_PUB
#define RECOVERY 1     /* intents matter (are read by the broker) only where a publisher can die */
#endif

/* ------------------------------------------------------------------------------------------------ */
/* Shared state                                                                                     */

byte tail;                 /* next position to claim */
byte hpos[C];              /* header marker: a reader at p accepts the header at p % C iff it holds p */
byte hlen[C];              /* units spanned (record length, or padding length) */
bit  hpad[C];              /* 1: padding, 0: data */
byte hpub[C];              /* publisher slot (data) */
byte hseq[C];              /* sequence number within the publisher (data) */

byte ipos[2];              /* intent, written only by the publisher, read by the broker */
byte ilen[2];
byte iwon[2];
byte pst[2];               /* publisher slot state, as the broker sees it */

byte sst[2];               /* subscriber slot state */
byte scur[2];              /* published cursor */
byte bell[2];              /* doorbell words */
byte mask;                 /* parked mask: bit j set while subscriber j is parked */
bool joinreq[2];           /* subscriber asked the broker to join */
bool joined[2];            /* join returned to the subscriber */

bool pdead[2];             /* process died (indexed by PROC_OF) */
bool marked[2];            /* broker has marked that process's publisher slots dead */
bool sdead[2];             /* subscriber process died */

/* broker's recovery walk, per dead slot */
byte ry[2];                /* NONE: not started */
byte rend[2];
bool wstop[2];

/* workload (constant after init) */
byte ncl[2];               /* claims per publisher */
byte wl[8];                /* wl[(p*2+k)*2+r]: length of record r of claim k of publisher p (0: none) */
#define WL(p, k, r) wl[((p) * 2 + (k)) * 2 + (r)]

/* ghost state, for the properties only */
byte upos[C];              /* position whose bytes occupy each unit (NONE: nothing yet) */
byte recpos[6];            /* recpos[p*MAXR+s]: position of record s of publisher p */
byte reclen[6];
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
#define BIT(j)         (1 << (j))

/* layout: padding to the ring end first if a record of l units would straddle it */
#define PADN(t, l)     (((l) != 0 && IDX(t) + (l) > C) -> (C - IDX(t)) : 0)
#define END1(t, l)     ((t) + PADN(t, l) + (l))
#define END2(t, a, b)  END1(END1(t, a), b)

/* gate: min over ACTIVE subscribers' cursors, or the tail if none */
#define CURG(j)        ((sst[j] == S_ACTIVE) -> scur[j] : tail)
#define GATE_NOW       MIN2(tail, MIN2(CURG(0), CURG(1)))
#define CURN(j)        ((sst[j] == S_ACTIVE) -> scur[j] : NONE)
#define MINCUR         MIN2(CURN(0), CURN(1))

#define COVERS(k, y)   (ilen[k] != 0 && ipos[k] <= (y) && (y) < ipos[k] + ilen[k])
#define LIVE_COVERS(y) ((pst[0] == P_ACTIVE && COVERS(0, y)) || (pst[1] == P_ACTIVE && COVERS(1, y)))
#define DEAD_END(k, y) ((pst[k] == P_DEAD && COVERS(k, y)) -> (ipos[k] + ilen[k]) : NONE)
#define OTHER_DEAD_COVERS(d, y) (pst[1 - (d)] == P_DEAD && COVERS(1 - (d), y))

#define READING(j)     (started[j] && sst[j] == S_ACTIVE)

/* Property 1: a write never destroys bytes that a reading subscriber has not read yet (the unit holds
 * nothing, the same position, or a position every reader is past), and never lands beyond the tail. */
#define UNIT_OK(j, y)  (!READING(j) || upos[IDX(y)] == NONE || upos[IDX(y)] == (y) || upos[IDX(y)] < spos[j])
inline write_unit(y) {
  assert((y) < tail);
  assert(UNIT_OK(0, y) && UNIT_OK(1, y));
  upos[IDX(y)] = (y)
}

/* A header is written in two steps: its fields (and, for data, its payload unit), then its marker. */
inline write_fields(y, l, pad, who, sq) {
  atomic {
    write_unit(y);
    hlen[IDX(y)] = l; hpad[IDX(y)] = pad; hpub[IDX(y)] = who; hseq[IDX(y)] = sq;
    if
    :: !pad && l == 2 -> write_unit(y + 1); hpos[IDX(y + 1)] = NONE   /* payload bytes: no valid marker */
    :: else
    fi
  }
}
#define PAD_MARKER(y)       hpos[IDX(y)] = (y)
#define DATA_MARKER(y, who) hpos[IDX(y)] = (y); ncommitted[who]++

/* ------------------------------------------------------------------------------------------------ */
/* Publisher (LaneWriter::try_claim / commit / notify)                                              */

proctype Pub(byte me) {
  byte k, r, t, e, g, at, pos, s, l, m;
  bool ok;
  {
    do
    :: k == ncl[me] -> break
    :: k < ncl[me] ->
claim:
      t = tail;
      e = END2(t, WL(me, k, 0), WL(me, k, 1));
#ifndef MUT_NO_GATE
      /* gate: the tail, then each active slot's cursor (one slot per step) */
      g = tail;
      atomic { if :: sst[0] == S_ACTIVE && scur[0] < g -> g = scur[0] :: else fi }
#if NSUB_RUN > 1
      atomic { if :: sst[1] == S_ACTIVE && scur[1] < g -> g = scur[1] :: else fi }
#endif
      if
      :: atomic { e > g + C -> g = 0; t = 0; e = 0 };
#if defined(RECOVERY) && !defined(MUT_FULL_KEEPS_INTENT)
        ilen[me] = 0;                                         /* clear the intent, return full */
#endif
        (END2(tail, WL(me, k, 0), WL(me, k, 1)) <= GATE_NOW + C);   /* the caller retries later */
        goto claim
      :: else
      fi;
      g = 0;
#endif
#ifdef RECOVERY
      ipos[me] = t;                                           /* the intent (relaxed stores ...) */
      ilen[me] = e - t;
#endif
      atomic {                                                /* ... ordered by the CAS(tail: t -> e), seq_cst */
        if
        :: tail == t ->
          tail = e; ok = 1;
          at = t + PADN(t, WL(me, k, 0));                     /* ghost: where the records go */
          recpos[me * MAXR + s] = at; reclen[me * MAXR + s] = WL(me, k, 0);
          if
          :: WL(me, k, 1) != 0 ->
            at = at + WL(me, k, 0); at = at + PADN(at, WL(me, k, 1));
            recpos[me * MAXR + s + 1] = at; reclen[me * MAXR + s + 1] = WL(me, k, 1)
          :: else
          fi;
          at = 0; e = 0
        :: else -> ok = 0; t = 0; e = 0
        fi
      }
      if
      :: atomic { !ok -> goto claim }                         /* the intent is rewritten next turn */
      :: else
      fi;
#ifdef SPEC_WON
      iwon[me] = t;
#endif
      /* commit: each record in order, padding first where it would straddle the ring end */
      pos = t; r = 0; t = 0;
      do
      :: atomic { (r == 0 || (r == 1 && WL(me, k, 1) != 0)) ->
          l = WL(me, k, r); at = pos + PADN(pos, l) };
        if
        :: at != pos ->
          write_fields(pos, at - pos, 1, me, 0);
          PAD_MARKER(pos)
        :: else
        fi;
        write_fields(at, l, 0, me, s);
        atomic { DATA_MARKER(at, me); s++; pos = at + l; r++; at = 0; l = 0 }
      :: else -> atomic { pos = 0; r = 0 }; break
      od;
#ifdef RECOVERY
      ilen[me] = 0;
#endif
      /* notify: read the parked mask, ring every set bit */
      m = mask;
      atomic { if :: m & BIT(0) -> bell[0]++ :: else fi; m = m & ~BIT(0) }
#if NSUB_RUN > 1
      atomic { if :: m & BIT(1) -> bell[1]++ :: else fi; m = 0 }
#endif
      k++
    od;
    pdone[me] = 1
  } unless { pdead[PROC_OF(me)] }
}

/* ------------------------------------------------------------------------------------------------ */
/* Subscriber (LaneReader::peek / consume / release, SubscriberCore::next_for)                       */

/* Not-ready is reported only after looking at the header at the read position (or on a stale load). */
#define NOT_READY_HERE(stale) res = NOTREADY; assert(stale || !COMMITTED(spos[j])); i = 0; hops = 0; break

/* LaneReader::peek + consume: reads until data or not-ready, stepping over any number of paddings,
 * one header per step. With `weak`, a header load may return a stale marker (C++ allows it: the marker
 * is a release store and nothing orders it before this load; see README). */
inline read_lane(weak) {
  do
  :: atomic {
      i = IDX(spos[j]);
      if
      :: weak && COMMITTED(spos[j]) -> NOT_READY_HERE(1)
      :: hpos[i] == spos[j] && hpad[i] ->
        spos[j] = spos[j] + hlen[i]; hops++; i = 0;
#ifdef MUT_HOP_LIMIT
        if :: hops == 2 -> NOT_READY_HERE(0) :: else fi
#endif
      :: hpos[i] == spos[j] && !hpad[i] ->
        /* Property 2: the record read is the record committed at this position, and it is the next
         * one of its publisher (the first one at or after our start, if we have none yet). */
        p = hpub[i]; s = hseq[i];
        assert(p < 2 && s < MAXR);
        assert(recpos[p * MAXR + s] == spos[j] && reclen[p * MAXR + s] == hlen[i]);
        assert(upos[i] == spos[j] && (hlen[i] == 1 || upos[IDX(spos[j] + 1)] == spos[j] + 1));
        if
        :: nexp[j * 2 + p] == NONE -> assert(s == 0 || recpos[p * MAXR + s - 1] < sstart[j])
        :: else -> assert(s == nexp[j * 2 + p])
        fi;
        nexp[j * 2 + p] = s + 1;
        spos[j] = spos[j] + hlen[i];
        res = GOT; i = 0; hops = 0; p = 0; s = 0;
        break
      :: else -> NOT_READY_HERE(0)
      fi
    }
  od
}

proctype Sub(byte j) {
  byte i, p, s, seen, hops, res;
  bool claimed;
  {
    if
    :: !joined[j] -> joinreq[j] = 1; joined[j]                /* AddSubscriber: the broker joins us */
    :: else
    fi;
loop:
    read_lane(0);
    if
    :: res == GOT -> atomic { scur[j] = spos[j]; res = 0 }; goto loop   /* release the cursor */
    :: else
    fi;
    /* park: the lost-wake-up handshake */
    seen = bell[j];
#ifdef MUT_PARK_NO_RECHECK
    claimed = (tail != spos[j]);
    read_lane(claimed);
    if
    :: res == GOT -> atomic { scur[j] = spos[j]; res = 0; seen = 0; claimed = 0 }; goto loop
    :: else
    fi;
    mask = mask | BIT(j);
#else
    mask = mask | BIT(j);                                     /* atomic RMW, seq_cst */
    claimed = (tail != spos[j]);                              /* re-read the tail ... */
    read_lane(claimed);                                       /* ... and re-try the read */
    if
    :: res == GOT ->
      mask = mask & ~BIT(j);
      atomic { scur[j] = spos[j]; res = 0; seen = 0; claimed = 0 };
      goto loop
    :: else
    fi;
#endif
#ifdef MUT_NO_NAP
    claimed = 0;
#endif
    if
    :: claimed ->
end_nap: (bell[j] != seen || COMMITTED(spos[j]))               /* a nap: wakes by itself */
    :: else ->
end_sleep: (bell[j] != seen)                                   /* futex wait on the doorbell */
    fi;
    atomic { mask = mask & ~BIT(j); seen = 0; claimed = 0 };
    goto loop
  } unless { sdead[j] }
}

/* ------------------------------------------------------------------------------------------------ */
/* Broker (single-threaded: join, leave, recovery run one at a time)                                 */

#ifdef MUT_RECOVERY_NO_SCAN
#define LIVE_BLOCKS(d) 0
#else
#define LIVE_BLOCKS(d) (ry[d] != NONE && LIVE_COVERS(ry[d]))
#endif
#define RECOV_READY(d) (pst[d] == P_DEAD && !LIVE_BLOCKS(d) && !(wstop[d] && OTHER_DEAD_COVERS(d, ry[d])))

proctype Broker() {
  byte j, d, y, e, q, m;
end_idle:
  if
  :: atomic { joinreq[0] && !joined[0] -> j = 0; goto join }
  :: atomic { joinreq[1] && !joined[1] -> j = 1; goto join }
  :: atomic { sdead[0] && sst[0] == S_ACTIVE -> j = 0; goto leave }
  :: atomic { sdead[1] && sst[1] == S_ACTIVE -> j = 1; goto leave }
  :: atomic { pdead[0] && !marked[0] ->                       /* mark all of the process's slots dead */
      marked[0] = 1;
      if :: PROC_OF(0) == 0 -> pst[0] = P_DEAD :: else fi;
      if :: PROC_OF(1) == 0 -> pst[1] = P_DEAD :: else fi;
      goto end_idle }
  :: atomic { pdead[1] && !marked[1] ->
      marked[1] = 1;
      if :: PROC_OF(0) == 1 -> pst[0] = P_DEAD :: else fi;
      if :: PROC_OF(1) == 1 -> pst[1] = P_DEAD :: else fi;
      goto end_idle }
  :: atomic { RECOV_READY(0) -> d = 0; wstop[0] = 0; goto recover }
  :: atomic { RECOV_READY(1) -> d = 1; wstop[1] = 0; goto recover }
  fi;

join:                                                         /* join_subscriber */
  scur[j] = tail;                                             /* hold the gate at the tail */
  sst[j] = S_ACTIVE;                                          /* seq_cst */
#ifdef MUT_JOIN_NO_REREAD
  atomic { sstart[j] = scur[j]; spos[j] = sstart[j]; started[j] = 1 }
#else
  atomic { sstart[j] = tail; spos[j] = sstart[j]; started[j] = 1 }   /* start = re-read tail */
#endif
  scur[j] = sstart[j];
  atomic { joined[j] = 1; j = 0; goto end_idle };

leave:                                                        /* leave_subscriber */
  sst[j] = S_FREE;
  atomic { mask = mask & ~BIT(j); j = 0; goto end_idle };

recover:                                                      /* recover_publisher, slot d */
  if
  :: ry[d] == NONE ->
    atomic {
      if
      :: ilen[d] == 0 || ipos[d] >= tail -> goto rfinish      /* nothing in flight / CAS never happened */
      :: else -> ry[d] = ipos[d]; rend[d] = ipos[d] + ilen[d]
      fi
    }
  :: else
  fi;
rwalk:
  y = ry[d];
  if
  :: y >= rend[d] -> goto rfinish
  :: else
  fi;
#ifndef SPEC_NO_TAIL_CHECK
  if                                                          /* 1. re-read the tail: beyond it, nothing */
  :: y >= tail -> goto rfinish                                /*    was claimed (and a live publisher may */
  :: else                                                     /*    be about to claim it) */
  fi;
#endif
#ifndef MUT_RECOVERY_NO_SCAN
  if                                                          /* 2. scan every slot's intent */
  :: LIVE_COVERS(y) -> goto end_idle                          /*    a live publisher's claim: retry later */
  :: else
  fi;
#endif
  atomic {                                                    /* 3. committed: step over */
    if
    :: COMMITTED(y) -> ry[d] = y + hlen[IDX(y)]; goto rwalk
    :: else
    fi
  }
#ifdef SPEC_WON
  atomic {
    if
    :: !(iwon[d] == ipos[d] || !OTHER_DEAD_COVERS(d, y)) -> wstop[d] = 1; goto end_idle
    :: else
    fi
  }
#endif
  atomic {                                                    /* 4. does anybody wait at or before y? */
    m = MINCUR;
    if
    :: m <= y -> skip
#ifdef SPEC_LEAVE_ALONE
    :: else -> goto rfinish
#else
    :: else -> if                                             /*    all are past y (its bytes may carry a */
               :: m < rend[d] -> ry[d] = m; goto rwalk        /*    later lap): go on where the first waits */
               :: else -> goto rfinish
               fi
#endif
    fi
  }
  atomic {                                                    /* 5. pad [y, min end of dead claims covering y) */
    e = MIN2(DEAD_END(0, y), DEAD_END(1, y));
    q = MIN2(e, y + C - IDX(y))                               /*    split at the ring end */
  }
  write_fields(y, q - y, 1, 2, 0);
  PAD_MARKER(y);
  if
  :: q < e ->
    write_fields(q, e - q, 1, 2, 0);
    PAD_MARKER(q)
  :: else
  fi;
  ry[d] = e;
  goto rwalk;

rfinish:
  ilen[d] = 0;
  pst[d] = P_FREE;
#ifndef SPEC_NO_RING
  m = mask;                                                   /* it may have died before its notify */
  if :: m & BIT(0) -> bell[0]++ :: else fi;
  if :: m & BIT(1) -> bell[1]++ :: else fi;
#endif
  goto end_idle
}

/* ------------------------------------------------------------------------------------------------ */
/* Deaths: at most one process dies, at any point                                                   */

proctype Killer() {
  if
#ifdef KILL_PUB
  :: pdead[PROC_OF(0)] = 1
  :: pdead[PROC_OF(1)] = 1
#endif
#ifdef KILL_SUB
  :: sdead[0] = 1
  :: sdead[1] = 1
#endif
  :: skip
  fi
}

/* ------------------------------------------------------------------------------------------------ */
/* Final state: nothing can move any more. Properties 3, 4, 5 ("eventually").                        */

#define GOT_ALL(j, p) (ncommitted[p] == 0 || recpos[(p) * MAXR + ncommitted[p] - 1] < sstart[j] || \
                       nexp[(j) * 2 + (p)] == ncommitted[p])
#define SURVIVOR(j)   (started[j] && !sdead[j])

proctype Final() {
  atomic {
    timeout ->
    /* every surviving subscriber received every committed record at or after its start */
    assert(!SURVIVOR(0) || (GOT_ALL(0, 0) && GOT_ALL(0, 1)));
    assert(!SURVIVOR(1) || (GOT_ALL(1, 0) && GOT_ALL(1, 1)));
    /* every surviving publisher finished (nobody stuck on a full lane) */
    assert(pdone[0] || pdead[PROC_OF(0)]);
    assert(pdone[1] || pdead[PROC_OF(1)]);
    /* every dead publisher slot was recovered, every dead subscriber left */
    assert(!pdead[PROC_OF(0)] || pst[0] == P_FREE);
    assert(!pdead[PROC_OF(1)] || pst[1] == P_FREE);
    assert(!sdead[0] || sst[0] == S_FREE);
    assert(!sdead[1] || sst[1] == S_FREE)
  }
}

init {
  byte i;
  atomic {
    tail = T0;
    for (i : 0 .. C - 1) { hpos[i] = NONE; upos[i] = NONE }
    for (i : 0 .. 3) { nexp[i] = NONE }
    ry[0] = NONE; ry[1] = NONE; iwon[0] = NONE; iwon[1] = NONE;
    /* publisher 0: one batch of two 1-unit records; publisher 1: a 2-unit record, then a 1-unit one */
    ncl[0] = 1; WL(0, 0, 0) = 1; WL(0, 0, 1) = 1;
    ncl[1] = 2; WL(1, 0, 0) = 2; WL(1, 1, 0) = 1;
    /* S0 (and S1 unless it joins later) subscribed at T0 */
    for (i : 0 .. NSUB_RUN - 1) {
      sst[i] = S_ACTIVE; scur[i] = T0; spos[i] = T0; sstart[i] = T0; started[i] = 1; joined[i] = 1
    }
#ifdef S1_JOINS
    sst[1] = S_FREE; scur[1] = 0; spos[1] = 0; sstart[1] = 0; started[1] = 0; joined[1] = 0;
#endif
    run Pub(0); run Pub(1);
    for (i : 0 .. NSUB_RUN - 1) { run Sub(i) }
    run Broker();
#if defined(KILL_PUB) || defined(KILL_SUB)
    run Killer();
#endif
    run Final()
  }
}
