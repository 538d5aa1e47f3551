#pragma once

#include <string>

namespace traffik {

// The token-bucket decision as one Redis Lua script, mirroring
// bucket/token_bucket.cc operation for operation (same integer arithmetic in
// token-milliseconds; every value stays within kMaxScaledCapacity, the
// bucket's rule, so Lua's doubles are exact). The bucket is a string "<scaled
// tokens>:<last ms>" written with SET ... PX, so the key expires when the bucket would be
// full again and Redis holds nothing stale (two commands per decision: GET, SET).
//
// KEYS[1] = bucket key; ARGV = capacity, period_ms, cost.
// Returns {allowed (1/0), wait_ms, remaining, reset_ms}.
//
// With a 4th ARGV "peek" (Backend::Peek): writes nothing and returns
// {allowed, wait_ms, remaining, reset_ms, remaining_now, reset_now}: the
// answer a decision would get, then the bucket as it stands (cost 0).
//
// Time comes from Redis' own clock (TIME), never from the caller, so every
// traffikd replica sharing the Redis agrees on it.
const std::string& RedisBucketScript();

// The same arithmetic with the time passed as ARGV[4] (ms) instead of read
// from TIME (and the "peek" flag, if any, as ARGV[5]). Only for tests that compare the
// script with the C++ bucket on identical inputs; never sent by the server.
const std::string& RedisBucketScriptWithExplicitNowForTesting();

// The all-or-nothing batch (Backend::DecideAllOrNothing) as one script, with
// the same arithmetic (shared Lua functions) and one TIME for all items.
//
// KEYS = the items' bucket keys, in order (repeats allowed); ARGV = capacity,
// period_ms, cost for each item in turn (3 per key). Evaluates the items in
// order on in-memory copies; writes every touched bucket only if all were
// allowed. Returns {applied (1/0)} followed by {allowed, wait_ms, remaining,
// reset_ms} per item; when not applied, remaining/reset_ms describe each
// bucket with nothing taken. On Redis Cluster every key must be in one slot.
// One more ARGV after the 3 per key, "peek", makes it a dry run: the same
// answer, nothing written.
const std::string& RedisAllOrNothingScript();

// The same with the time passed as the ARGV after the 3 per key (then the
// optional "peek"), for tests only.
const std::string& RedisAllOrNothingScriptWithExplicitNowForTesting();

// Independent decisions on several buckets as one script call: the backend
// coalesces the single decisions queued for one node (Redis Cluster: one hash
// slot) into one EVALSHA of this script, so Redis pays the call's fixed cost
// (the command, the script's setup, TIME) once for N buckets.
//
// KEYS = the items' bucket keys, in order (repeats allowed); ARGV[1] = one
// character per item, 'p' for a peek (writes nothing) and 'd' for a
// decision; then capacity, period_ms, cost for each item in turn (3 per key).
// One TIME for all items; each item is evaluated and stored in order, exactly
// as its own call of the bucket script at that time would be (a repeated key
// sees the earlier items' takes), and is independent of the others (not all
// or nothing). Returns one flat array (script_reply.h DecodeEachReply)
// holding, per item in order, allowed, wait_ms, remaining, reset_ms for a
// decision, the bucket script's 6 peek integers for a peek, or one error
// reply when that item failed (e.g. WRONGTYPE: the other items still run and
// the call as a whole succeeds). Flat because Redis converts every nested
// Lua table of a reply at a measurable cost per table.
//
// Cost per item (the reason for its shape): one MGET reads all keys, a new
// bucket is written with SET ... NX (a key of another type, which MGET reads
// as nil, fails the NX and the item then takes its own call's path, so it
// answers WRONGTYPE as before), no pcall per item, and the numbers parsed
// once per distinct string. A single item takes the bucket script's path (GET,
// then SET or DEL) under one pcall.
const std::string& RedisEachScript();

// The same with the time passed as the last ARGV (after the 3 per key), for
// tests only.
const std::string& RedisEachScriptWithExplicitNowForTesting();

}  // namespace traffik
