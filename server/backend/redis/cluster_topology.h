#pragma once

// Redis Cluster topology from what the servers answer: node addresses,
// MOVED / ASK redirections and CLUSTER SLOTS replies. Pure functions, no I/O,
// so they are unit-tested and fuzzed without a redis-server
// (tests/redis/redis_reply_test.cc, fuzz/redis_reply_fuzz.cc).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "backend/redis/redis_options.h"

struct redisReply;

namespace traffik {

// "host:port", or "[host]:port" when the host is an IPv6 address (has a ':').
std::string FormatRedisAddress(absl::string_view host, long long port);

// The endpoint of an address made by FormatRedisAddress or sent by Redis
// ("host:port", "[v6]:port", "v6:port"): the host is everything before the
// last ':', without brackets; port 0 when what follows is not a number.
RedisEndpoint ParseRedisAddress(absl::string_view address);

// A MOVED or ASK error: "MOVED <slot> <host>:<port>" / "ASK <slot> <host>:<port>".
struct RedisRedirect {
  bool moved = false;  // MOVED (the slot has a new owner); else ASK (one-shot)
  int slot = 0;        // 0 .. kRedisClusterSlots - 1
  std::string address;
};

// The redirection `error` asks for; nullopt when it is not a well-formed MOVED
// or ASK (three space-separated parts, a slot in range, a non-empty address).
// An address without a host (":port", as Redis sends when it does not know its
// own address) gets `default_host`, the host of the node that answered.
std::optional<RedisRedirect> ParseRedisRedirect(absl::string_view error,
                                                absl::string_view default_host);

// One range of a CLUSTER SLOTS reply: slots first..last are served by the
// master at `address`.
struct RedisSlotRange {
  int first = 0;  // clamped to 0 .. kRedisClusterSlots
  int last = 0;   // clamped to -1 .. kRedisClusterSlots - 1; last < first: empty
  std::string address;
};

// The ranges of a CLUSTER SLOTS reply, in reply order (apply them in order:
// a later range wins). Ranges that are not [int, int, [host, int, ...], ...]
// are skipped; an empty host gets `default_host`. nullopt when the reply is
// not an array at all (an error: the map must not be touched).
std::optional<std::vector<RedisSlotRange>> ParseClusterSlots(
    const redisReply& reply, absl::string_view default_host);

}  // namespace traffik
