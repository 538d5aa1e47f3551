#pragma once

#include <string>

namespace traffik {

// The token-bucket decision as one Redis Lua script, mirroring
// bucket/token_bucket.cc operation for operation (same integer arithmetic in
// token-milliseconds; every value stays below 2^53 so Lua's doubles are
// exact). The bucket is a string "<scaled tokens>:<last ms>" written with
// SET ... PX, so the key expires when the bucket would be full again and
// Redis holds nothing stale (two commands per decision: GET, SET).
//
// KEYS[1] = bucket key; ARGV = capacity, period_ms, cost.
// Returns {allowed (1/0), wait_ms, remaining, reset_ms}.
//
// Time comes from Redis' own clock (TIME), never from the caller, so every
// traffikd replica sharing the Redis agrees on it.
const std::string& RedisBucketScript();

// The same arithmetic with the time passed as ARGV[4] (ms) instead of read
// from TIME. Only for tests that compare the script with the C++ bucket on
// identical inputs; never sent by the server.
const std::string& RedisBucketScriptWithExplicitNowForTesting();

}  // namespace traffik
