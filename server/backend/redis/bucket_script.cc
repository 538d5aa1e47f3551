#include "backend/redis/bucket_script.h"

namespace traffik {
namespace {

// Shared by every script. floordiv/ceildiv correct the rounding of a double
// division so they are exact for the integers a valid rate produces (at most
// kMaxScaledCapacity, bucket/token_bucket.h).
//
// The arithmetic is split as in bucket/token_bucket.cc: load() reads a stored
// bucket, compute() is the pure decision on an in-memory state (nil: a new
// bucket), store() writes the result back. A multi-key batch evaluates on
// in-memory states and stores only when every item passed.
constexpr char kCore[] = R"lua(
-- The library functions as locals: a local is one VM register, a global a
-- table lookup per use (measurably cheaper per item in a coalesced call).
local floor, min, max, tonumber, tostring, type, pcall = math.floor, math.min, math.max,
  tonumber, tostring, type, pcall
local find, sub, format, byte, match = string.find, string.sub, string.format, string.byte,
  string.match
local rcall = redis.call

local function floordiv(a, b)
  local q = floor(a / b)
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

-- The stored state of `key` as {scaled, last}, or nil for a new bucket.
local function load(key)
  local state = rcall('GET', key)
  local sep = state and find(state, ':', 1, true)
  if not sep then return nil end
  return {tonumber(sub(state, 1, sep - 1)), tonumber(sub(state, sep + 1))}
end

-- token_bucket.cc Decide(): `st` is {scaled, last} or nil. Returns the answer
-- {allowed (1/0), wait, remaining, reset} and the state to store.
local function compute(st, capacity, period, cost, now)
  local full = capacity * period
  local scaled = full
  local last = now
  if st then
    -- A state stored under another rate may hold more than this rate's full:
    -- it counts as full (as in token_bucket.cc).
    scaled = min(full, st[1])
    local stored_last = st[2]
    local elapsed = now - stored_last
    if elapsed > 0 then
      if elapsed >= period then
        scaled = full
      else
        scaled = min(full, scaled + elapsed * capacity)
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
  return {allowed, wait, remaining, reset}, {scaled, last}
end

-- The shortest expiry written, in ms. 0 in production; the explicit-now test
-- scripts raise it, because they drive a synthetic clock while Redis expires
-- keys on its real one (a 1 ms TTL could lapse between two test steps).
local min_ttl = 0

-- Writes `st` with an expiry at the moment the bucket is full again (`reset`
-- ms), or deletes the key when it already is.
local function store(key, st, reset)
  if reset > 0 then
    rcall('SET', key, format('%d:%d', st[1], st[2]), 'PX',
               format('%d', max(reset, min_ttl)))
  else
    rcall('DEL', key)
  end
end

local function decide(key, capacity, period, cost, now)
  local answer, st = compute(load(key), capacity, period, cost, now)
  store(key, st, answer[4])
  return answer
end

-- What decide() would answer, and the bucket as it stands (cost 0); writes
-- nothing. Returns {allowed, wait, remaining, reset, remaining_now, reset_now}.
local function peek(key, capacity, period, cost, now)
  local st = load(key)
  local answer = compute(st, capacity, period, cost, now)
  local as_is = compute(st, capacity, period, 0, now)
  return {answer[1], answer[2], answer[3], answer[4], as_is[3], as_is[4]}
end

-- decide(), or peek() when `mode` is 'peek'.
local function decide_or_peek(key, capacity, period, cost, now, mode)
  if mode == 'peek' then return peek(key, capacity, period, cost, now) end
  return decide(key, capacity, period, cost, now)
end

-- KEYS[i] with ARGV[3i-2..3i] = capacity, period, cost. Returns
-- {applied (1/0), then allowed, wait, remaining, reset per item}. A dry run
-- answers the same and writes nothing.
local function decide_all_or_nothing(now, dry_run)
  local n = #KEYS
  local loaded = {}   -- key -> stored state (false: new bucket)
  local current = {}  -- key -> {state, reset, capacity} as the evaluation leaves it
  local answers = {}
  local applied = 1
  for i = 1, n do
    local key = KEYS[i]
    local capacity = tonumber(ARGV[3 * i - 2])
    local period = tonumber(ARGV[3 * i - 1])
    local cost = tonumber(ARGV[3 * i])
    if loaded[key] == nil then loaded[key] = load(key) or false end
    local st = current[key] and current[key][1] or (loaded[key] or nil)
    local answer, after = compute(st, capacity, period, cost, now)
    current[key] = {after, answer[4]}
    if answer[1] == 0 then applied = 0 end
    answers[i] = answer
  end
  local out = {applied}
  if applied == 1 and not dry_run then
    local stored = {}
    for i = 1, n do
      local key = KEYS[i]
      if not stored[key] then
        stored[key] = true
        store(key, current[key][1], current[key][2])
      end
    end
  end
  for i = 1, n do
    local answer = answers[i]
    if applied == 0 then
      -- Nothing taken: the bucket as it stands.
      local as_is = compute(loaded[KEYS[i]] or nil, tonumber(ARGV[3 * i - 2]),
                            tonumber(ARGV[3 * i - 1]), 0, now)
      answer[3] = as_is[3]
      answer[4] = as_is[4]
    end
    for k = 1, 4 do out[#out + 1] = answer[k] end
  end
  return out
end

-- Independent decisions in one call (the backend's coalescing): KEYS[i] with
-- ARGV[3i-1..3i+1] = capacity, period, cost; ARGV[1] holds one character per
-- item, 'p' for a peek (nothing written), anything else for a decision. The
-- items run in order, each exactly as its own decide()/peek() call at `now`
-- (a repeated key sees the earlier item's take). An item that fails (e.g. a
-- key of another type) answers with its error and the others still run, so
-- the call never stops half-way. Returns one entry per item: the reply
-- decide() or peek() gives, or an error reply.
local function decide_each(now, modes)
  local out = {}
  for i = 1, #KEYS do
    local key = KEYS[i]
    local capacity = tonumber(ARGV[3 * i - 1])
    local period = tonumber(ARGV[3 * i])
    local cost = tonumber(ARGV[3 * i + 1])
    local ok, answer
    if byte(modes, i) == 112 then  -- 'p'
      ok, answer = pcall(peek, key, capacity, period, cost, now)
    else
      ok, answer = pcall(decide, key, capacity, period, cost, now)
    end
    if ok then
      out[i] = answer
    else
      -- As the item's own call would see it: Redis' error ("WRONGTYPE ...")
      -- as is, a Lua error ("user_script:12: ...") as "ERR ...".
      local msg = type(answer) == 'table' and answer.err or tostring(answer)
      if not match(msg, '^%u[%u%d_]* ') then msg = 'ERR ' .. msg end
      out[i] = {err = msg}
    end
  end
  return out
end
)lua";

constexpr char kRedisNow[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
)lua";

constexpr char kMain[] = R"lua(
return decide_or_peek(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                      now, ARGV[4])
)lua";

constexpr char kMainExplicitNow[] = R"lua(
min_ttl = 3600000
return decide_or_peek(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                      tonumber(ARGV[4]), ARGV[5])
)lua";

constexpr char kMainAllOrNothing[] = R"lua(
return decide_all_or_nothing(now, ARGV[3 * #KEYS + 1] == 'peek')
)lua";

constexpr char kMainAllOrNothingExplicitNow[] = R"lua(
min_ttl = 3600000
return decide_all_or_nothing(tonumber(ARGV[3 * #KEYS + 1]), ARGV[3 * #KEYS + 2] == 'peek')
)lua";

constexpr char kMainEach[] = R"lua(
return decide_each(now, ARGV[1])
)lua";

constexpr char kMainEachExplicitNow[] = R"lua(
min_ttl = 3600000
return decide_each(tonumber(ARGV[3 * #KEYS + 2]), ARGV[1])
)lua";

}  // namespace

const std::string& RedisBucketScript() {
  static const std::string* script =
      new std::string(std::string(kCore) + kRedisNow + kMain);
  return *script;
}

const std::string& RedisBucketScriptWithExplicitNowForTesting() {
  static const std::string* script =
      new std::string(std::string(kCore) + kMainExplicitNow);
  return *script;
}

const std::string& RedisAllOrNothingScript() {
  static const std::string* script =
      new std::string(std::string(kCore) + kRedisNow + kMainAllOrNothing);
  return *script;
}

const std::string& RedisAllOrNothingScriptWithExplicitNowForTesting() {
  static const std::string* script =
      new std::string(std::string(kCore) + kMainAllOrNothingExplicitNow);
  return *script;
}

const std::string& RedisEachScript() {
  static const std::string* script =
      new std::string(std::string(kCore) + kRedisNow + kMainEach);
  return *script;
}

const std::string& RedisEachScriptWithExplicitNowForTesting() {
  static const std::string* script =
      new std::string(std::string(kCore) + kMainEachExplicitNow);
  return *script;
}

}  // namespace traffik
