#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace traffik {

inline constexpr int kRedisClusterSlots = 16384;

// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of the hash tag (the
// bytes between the first '{' and the next '}', when non-empty) or of the
// whole key, modulo 16384.
int RedisKeySlot(absl::string_view key);

}  // namespace traffik
