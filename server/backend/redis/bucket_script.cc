#include "backend/redis/bucket_script.h"

namespace traffik {
namespace {

// Shared by both scripts. floordiv/ceildiv correct the rounding of a double
// division so they are exact for integers below 2^53.
constexpr char kCore[] = R"lua(
local function floordiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function ceildiv(a, b)
  local q = floordiv(a, b)
  if q * b < a then q = q + 1 end
  return q
end

local function decide(key, capacity, period, cost, now)
  local full = capacity * period
  local scaled = full
  local last = now
  local state = redis.call('GET', key)
  local sep = state and string.find(state, ':', 1, true)
  if sep then
    scaled = tonumber(string.sub(state, 1, sep - 1))
    local stored_last = tonumber(string.sub(state, sep + 1))
    local elapsed = now - stored_last
    if elapsed > 0 then
      if elapsed >= period then
        scaled = full
      else
        scaled = math.min(full, scaled + elapsed * capacity)
      end
    end
    if stored_last > now then last = stored_last end
  end

  local need = cost * period
  local allowed = 0
  local wait = 0
  if scaled >= need then
    scaled = scaled - need
    allowed = 1
  else
    wait = ceildiv(need - scaled, capacity)
  end
  local remaining = floordiv(scaled, period)
  local reset = ceildiv(full - scaled, capacity)
  if reset > 0 then
    redis.call('SET', key, string.format('%d:%d', scaled, last), 'PX', string.format('%d', reset))
  else
    redis.call('DEL', key)
  end
  return {allowed, wait, remaining, reset}
end
)lua";

constexpr char kMainRedisTime[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return decide(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), now)
)lua";

constexpr char kMainExplicitNow[] = R"lua(
return decide(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
              tonumber(ARGV[4]))
)lua";

}  // namespace

const std::string& RedisBucketScript() {
  static const std::string* script = new std::string(std::string(kCore) + kMainRedisTime);
  return *script;
}

const std::string& RedisBucketScriptWithExplicitNowForTesting() {
  static const std::string* script =
      new std::string(std::string(kCore) + kMainExplicitNow);
  return *script;
}

}  // namespace traffik
