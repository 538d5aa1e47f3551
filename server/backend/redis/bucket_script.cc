#include "backend/redis/bucket_script.h"

namespace traffik {
namespace {

// Shared by every script. compute()'s floor/ceil divisions correct the
// rounding of a double division so they are exact for the integers a valid
// rate produces (at most kMaxScaledCapacity, bucket/token_bucket.h).
//
// The arithmetic is split as in bucket/token_bucket.cc: load() reads a stored
// bucket, compute() is the pure decision on an in-memory state (nil: a new
// bucket), store() writes the result back. A multi-key batch evaluates on
// in-memory states and stores only when every item passed. Each script is
// kCore plus only the functions it calls: the script body runs on every call,
// so every `local function` is a closure made per call.
constexpr char kCore[] = R"lua(
-- The library functions as locals: a local is one VM register, a global a
-- table lookup per use (measurably cheaper per item in a coalesced call).
local floor, min, max, tonumber, tostring, type, pcall, error, unpack = math.floor,
  math.min, math.max, tonumber, tostring, type, pcall, error, unpack
local find, sub, format, byte, match = string.find, string.sub, string.format, string.byte,
  string.match
local rcall, rpcall = redis.call, redis.pcall

-- The stored state "<scaled>:<last>" as scaled, last; nil for a new bucket (no
-- ':'). Raises on a malformed state (a part that is no number).
local function parse(state)
  local sep = find(state, ':', 1, true)
  if not sep then return nil end
  local scaled, last = tonumber(sub(state, 1, sep - 1)), tonumber(sub(state, sep + 1))
  if not (scaled and last) then error('malformed bucket state') end
  return scaled, last
end

-- The stored state of `key` as scaled, last, or nil for a new bucket.
local function load(key)
  local state = rcall('GET', key)
  if not state then return nil end
  return parse(state)
end

-- token_bucket.cc Decide() on the state `scaled`, `last` (scaled nil: a new
-- bucket). Returns the answer allowed (1/0), wait, remaining, reset, then the
-- state to store (scaled, last): plain values, no tables.
local function compute(stored, stored_last, capacity, period, cost, now)
  local full = capacity * period
  local scaled = full
  local last = now
  if stored then
    -- A state stored under another rate may hold more than this rate's full:
    -- it counts as full (as in token_bucket.cc).
    scaled = min(full, stored)
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

  -- The divisions below are floordiv()/ceildiv() written out: a Lua call per
  -- division is a measurable part of a coalesced item's cost.
  local need = cost * period
  local allowed = 0
  local wait = 0
  local a, q
  if scaled >= need then
    scaled = scaled - need
    allowed = 1
  else
    -- wait = ceildiv(need - scaled, capacity)
    a = need - scaled
    q = floor(a / capacity)
    if q * capacity > a then q = q - 1 elseif (q + 1) * capacity <= a then q = q + 1 end
    if q * capacity < a then q = q + 1 end
    wait = q
  end
  -- remaining = floordiv(scaled, period)
  local remaining = floor(scaled / period)
  if remaining * period > scaled then
    remaining = remaining - 1
  elseif (remaining + 1) * period <= scaled then
    remaining = remaining + 1
  end
  -- reset = ceildiv(full - scaled, capacity)
  a = full - scaled
  q = floor(a / capacity)
  if q * capacity > a then q = q - 1 elseif (q + 1) * capacity <= a then q = q + 1 end
  if q * capacity < a then q = q + 1 end
  return allowed, wait, remaining, q, scaled, last
end

-- The shortest expiry written, in ms. 0 in production; the explicit-now test
-- scripts raise it, because they drive a synthetic clock while Redis expires
-- keys on its real one (a 1 ms TTL could lapse between two test steps).
local min_ttl = 0

-- Writes the state with an expiry at the moment the bucket is full again
-- (`reset` ms), or deletes the key when it already is.
local function store(key, scaled, last, reset)
  if reset > 0 then
    rcall('SET', key, format('%d:%d', scaled, last), 'PX', format('%d', max(reset, min_ttl)))
  else
    rcall('DEL', key)
  end
end

local function decide(key, capacity, period, cost, now)
  local stored, stored_last = load(key)
  local allowed, wait, remaining, reset, scaled, last =
    compute(stored, stored_last, capacity, period, cost, now)
  store(key, scaled, last, reset)
  return {allowed, wait, remaining, reset}
end

-- What decide() would answer, and the bucket as it stands (cost 0); writes
-- nothing. Returns {allowed, wait, remaining, reset, remaining_now, reset_now}.
local function peek(key, capacity, period, cost, now)
  local stored, stored_last = load(key)
  local allowed, wait, remaining, reset = compute(stored, stored_last, capacity, period,
                                                  cost, now)
  local _, _, remaining_now, reset_now = compute(stored, stored_last, capacity, period, 0,
                                                 now)
  return {allowed, wait, remaining, reset, remaining_now, reset_now}
end
)lua";

// decide() or peek(): the single bucket script.
constexpr char kDecideOrPeek[] = R"lua(
local function decide_or_peek(key, capacity, period, cost, now, mode)
  if mode == 'peek' then return peek(key, capacity, period, cost, now) end
  return decide(key, capacity, period, cost, now)
end
)lua";

constexpr char kAllOrNothing[] = R"lua(
-- KEYS[i] with ARGV[3i-2..3i] = capacity, period, cost. Returns
-- {applied (1/0), then allowed, wait, remaining, reset per item}. A dry run
-- answers the same and writes nothing.
local function decide_all_or_nothing(now, dry_run)
  local n = #KEYS
  local loaded = {}   -- key -> stored state {scaled, last} (false: new bucket)
  local current = {}  -- key -> {scaled, last, reset} as the evaluation leaves it
  local answers = {}
  local applied = 1
  for i = 1, n do
    local key = KEYS[i]
    local capacity = tonumber(ARGV[3 * i - 2])
    local period = tonumber(ARGV[3 * i - 1])
    local cost = tonumber(ARGV[3 * i])
    if loaded[key] == nil then
      local scaled, last = load(key)
      loaded[key] = scaled and {scaled, last} or false
    end
    local st = current[key] or loaded[key]
    local allowed, wait, remaining, reset, scaled, last =
      compute(st and st[1], st and st[2], capacity, period, cost, now)
    current[key] = {scaled, last, reset}
    if allowed == 0 then applied = 0 end
    answers[i] = {allowed, wait, remaining, reset}
  end
  local out = {applied}
  if applied == 1 and not dry_run then
    local stored = {}
    for i = 1, n do
      local key = KEYS[i]
      if not stored[key] then
        stored[key] = true
        local c = current[key]
        store(key, c[1], c[2], c[3])
      end
    end
  end
  for i = 1, n do
    local answer = answers[i]
    if applied == 0 then
      -- Nothing taken: the bucket as it stands.
      local st = loaded[KEYS[i]]
      local _, _, remaining_now, reset_now =
        compute(st and st[1], st and st[2], tonumber(ARGV[3 * i - 2]),
                tonumber(ARGV[3 * i - 1]), 0, now)
      answer[3] = remaining_now
      answer[4] = reset_now
    end
    for k = 1, 4 do out[#out + 1] = answer[k] end
  end
  return out
end
)lua";

constexpr char kEach[] = R"lua(
-- An item the fast path leaves to the general one: the item's own decide() or
-- peek() call as is, under pcall, so that its error (Redis' "WRONGTYPE ..." as
-- is, a Lua error as "ERR ...") answers that item alone.
local function each_slow(is_peek, key, capacity, period, cost, now)
  local ok, answer
  if is_peek then
    ok, answer = pcall(peek, key, capacity, period, cost, now)
  else
    ok, answer = pcall(decide, key, capacity, period, cost, now)
  end
  if ok then return answer end
  local msg = type(answer) == 'table' and answer.err or tostring(answer)
  if not match(msg, '^%u[%u%d_]* ') then msg = 'ERR ' .. msg end
  return {err = msg}
end

)lua";

// One item (one decision in flight): its own call, the bucket script's path
// and reply (no MGET, no bookkeeping tables), before decide_each()'s closure
// is even made. `now` is set.
constexpr char kEachOne[] = R"lua(
if #KEYS <= 1 then
  if #KEYS == 0 then return {} end
  local answer = each_slow(byte(ARGV[1], 1) == 112, KEYS[1], tonumber(ARGV[2]),
                           tonumber(ARGV[3]), tonumber(ARGV[4]), now)
  if answer.err then return {answer} end
  return answer
end
)lua";

constexpr char kDecideEach[] = R"lua(
-- Independent decisions in one call (the backend's coalescing): KEYS[i] with
-- ARGV[3i-1..3i+1] = capacity, period, cost; ARGV[1] holds one character per
-- item, 'p' for a peek (nothing written), anything else for a decision. The
-- items run in order, each exactly as its own decide()/peek() call at `now`
-- (a repeated key sees the earlier item's take). An item that fails (e.g. a
-- key of another type) answers with its error and the others still run, so
-- the call never stops half-way. Returns one flat array: per item, the
-- integers decide() (4) or peek() (6) gives, or one error reply.
--
-- The cost per item is what matters here, so the common item takes a fast
-- path with the same arithmetic: one MGET reads every key up front (a key
-- holding another type reads as nil there, where GET raised WRONGTYPE), a
-- key with no value is written with SET ... NX (which fails, writing nothing,
-- exactly when the key holds another type), and no pcall. Whatever the fast
-- path cannot answer exactly as decide()/peek() would (a nil key on a peek or
-- on a write that deletes, a malformed state or argument, a failed NX) goes to
-- each_slow(), which is the item's own call; from then on that key takes the
-- slow path for the rest of the call. A key written earlier in the call is
-- read from what this call stored (`at`): the value, or its numbers when
-- they format and parse back exactly, so it is what GET would read.
--
-- A key repeated in the call (a hot key: one client, a global limit) is
-- written at most twice per call, not once per item: its first item writes at
-- once (which settles that the key holds a string: a failed NX or WRONGTYPE
-- shows there), the later items only record their state in `pend`, and the
-- last state recorded per key is written when the items are done. That is
-- the state and expiry the items' own writes would have left (one clock),
-- and that write cannot fail: the key holds this call's string, and Redis
-- refuses a script's writes for OOM only before its first one. An item that
-- takes the slow path writes its key's pending state first (settle), so its
-- GET reads what the items before it left.
local function decide_each(now, modes)
  local n = #KEYS
  local values = rcall('MGET', unpack(KEYS))
  local out = {}
  local k = 0  -- entries in out
  local at = {}         -- key -> the last item that stored it (fast path)
  local slow = {}       -- key -> true once an item on it took the slow path
  local lasts = {}  -- item -> the `last` it stored, when not `now`
  -- tonumber() of a string, memoised: tonumber runs strtod twice, and the
  -- items of one call mostly repeat their rates, costs and clock values
  -- (false: no number).
  local nums = {}
  local decimals = {}  -- number -> format('%d', number)
  local heads = {}     -- number -> format('%d:', number)
  -- key -> its state to write at the end (false: delete), and that state's
  -- expiry (ms, a decimal); made when a key first repeats.
  local pend, pend_px
  local function settle(key)
    local value = pend and pend[key]
    if value == nil then return end
    if value then rcall('SET', key, value, 'PX', pend_px[key]) else rcall('DEL', key) end
    pend[key] = nil
  end
  for i = 1, n do
    local key = KEYS[i]
    local a = ARGV[3 * i - 1]
    local capacity = nums[a]
    if capacity == nil then capacity = tonumber(a) or false; nums[a] = capacity end
    a = ARGV[3 * i]
    local period = nums[a]
    if period == nil then period = tonumber(a) or false; nums[a] = period end
    a = ARGV[3 * i + 1]
    local cost = nums[a]
    if cost == nil then cost = tonumber(a) or false; nums[a] = cost end
    local is_peek = byte(modes, i) == 112  -- 'p'
    local answer
    if slow[key] or not (capacity and period and cost) then
      settle(key)
      answer = each_slow(is_peek, key, tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i]),
                         tonumber(ARGV[3 * i + 1]), now)
      slow[key] = true
    else
      local stored, stored_last, fresh
      -- What GET would read now: MGET's value, or what an earlier item of
      -- this call stored (false: it deleted the key; a number: the scaled
      -- tokens of a state whose numbers format and parse back exactly, with
      -- `last` in lasts[j] or `now`).
      local j = at[key]
      local state = values[j or i]
      if j and state and type(state) == 'number' then
        stored = state
        stored_last = lasts[j] or now
      elseif state then
        local sep = find(state, ':', 1, true)
        if sep then
          a = sub(state, 1, sep - 1)
          stored = nums[a]
          if stored == nil then stored = tonumber(a) or false; nums[a] = stored end
          a = sub(state, sep + 1)
          stored_last = nums[a]
          if stored_last == nil then stored_last = tonumber(a) or false; nums[a] = stored_last end
          if not (stored and stored_last) then fresh = 'bad' end
        end
      else
        fresh = true  -- no key, or a key of another type
      end
      if fresh == 'bad' or (fresh and is_peek) then
        settle(key)
        answer = each_slow(is_peek, key, capacity, period, cost, now)
        slow[key] = true
      else
        local allowed, wait, remaining, reset, scaled, last =
          compute(stored, stored_last, capacity, period, cost, now)
        if is_peek then
          local _, _, remaining_now, reset_now =
            compute(stored, stored_last, capacity, period, 0, now)
          out[k + 1], out[k + 2], out[k + 3], out[k + 4], out[k + 5], out[k + 6] =
            allowed, wait, remaining, reset, remaining_now, reset_now
          k = k + 6
        elseif reset > 0 then
          local ttl = reset
          if ttl < min_ttl then ttl = min_ttl end
          -- The stored value and the expiry as decimals, each number formatted
          -- once per call: format('%d:', scaled) .. format('%d', last) is
          -- format('%d:%d', scaled, last), and the items of one call mostly
          -- share `last` (now), and on new buckets `scaled` and the ttl too.
          local px = decimals[ttl]
          if not px then
            px = format('%d', ttl)
            decimals[ttl] = px
          end
          local value = heads[scaled]
          if not value then
            value = format('%d:', scaled)
            if scaled == scaled then heads[scaled] = value end  -- not NaN
          end
          local tail = decimals[last]
          if not tail then
            tail = format('%d', last)
            if last == last then decimals[last] = tail end
          end
          value = value .. tail
          if j then
            -- Written earlier in this call: the last state goes at the end.
            if not pend then pend, pend_px = {}, {} end
            pend[key] = value
            pend_px[key] = px
          else
            local r
            if fresh then
              r = rpcall('SET', key, value, 'PX', px, 'NX')
            else
              r = rpcall('SET', key, value, 'PX', px)
            end
            if not r then
              -- NX failed: the key holds another type.
              answer = each_slow(false, key, capacity, period, cost, now)
              slow[key] = true
            elseif r.err then
              answer = r
              slow[key] = true
            end
          end
          if not answer then
            out[k + 1], out[k + 2], out[k + 3], out[k + 4] = allowed, wait, remaining, reset
            k = k + 4
            at[key] = i
            if scaled % 1 == 0 and scaled < 2 ^ 53 and scaled > -2 ^ 53 and last % 1 == 0 and
                last < 2 ^ 53 and last > -2 ^ 53 then
              -- format('%d') then tonumber() gives these back exactly.
              values[i] = scaled
              if last ~= now then lasts[i] = last end
            else
              values[i] = value
            end
          end
        elseif fresh then
          -- Full on a nil key: the key's own call (GET, then a DEL of nothing,
          -- or WRONGTYPE).
          settle(key)
          answer = each_slow(false, key, capacity, period, cost, now)
          slow[key] = true
        else
          if j then
            if not pend then pend, pend_px = {}, {} end
            pend[key] = false  -- deleted at the end (see `pend`)
          else
            rcall('DEL', key)
          end
          out[k + 1], out[k + 2], out[k + 3], out[k + 4] = allowed, wait, remaining, reset
          k = k + 4
          at[key] = i
          values[i] = false
        end
      end
    end
    if answer then
      if answer.err then
        k = k + 1
        out[k] = answer
      else
        for e = 1, #answer do out[k + e] = answer[e] end
        k = k + #answer
      end
    end
  end
  if pend then
    -- settle() clears the visited entry: Lua allows that during pairs().
    for key in pairs(pend) do settle(key) end
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

constexpr char kEachExplicitNow[] = R"lua(
min_ttl = 3600000
local now = tonumber(ARGV[3 * #KEYS + 2])
)lua";

}  // namespace

const std::string& RedisBucketScript() {
  static const std::string* script =
      new std::string(std::string(kCore) + kDecideOrPeek + kRedisNow + kMain);
  return *script;
}

const std::string& RedisBucketScriptWithExplicitNowForTesting() {
  static const std::string* script =
      new std::string(std::string(kCore) + kDecideOrPeek + kMainExplicitNow);
  return *script;
}

const std::string& RedisAllOrNothingScript() {
  static const std::string* script =
      new std::string(std::string(kCore) + kAllOrNothing + kRedisNow + kMainAllOrNothing);
  return *script;
}

const std::string& RedisAllOrNothingScriptWithExplicitNowForTesting() {
  static const std::string* script =
      new std::string(std::string(kCore) + kAllOrNothing + kMainAllOrNothingExplicitNow);
  return *script;
}

const std::string& RedisEachScript() {
  static const std::string* script = new std::string(
      std::string(kCore) + kEach + kRedisNow + kEachOne + kDecideEach + kMainEach);
  return *script;
}

const std::string& RedisEachScriptWithExplicitNowForTesting() {
  static const std::string* script = new std::string(
      std::string(kCore) + kEach + kEachExplicitNow + kEachOne + kDecideEach + kMainEach);
  return *script;
}

}  // namespace traffik
