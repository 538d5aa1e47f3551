// RedisBackend against real redis-server processes started by the harness.
#include "backend/redis/redis_backend.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "backend/memory/memory_backend.h"
#include "backend/redis/bucket_script.h"
#include "backend/redis/key_slot.h"
#include "backend/redis/script_registry.h"
#include "bucket/token_bucket.h"
#include "clock/clock.h"
#include "engine/engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "redis/backend_sync.h"
#include "redis/redis_harness.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;
using testing_redis::AllOrNothingSync;
using testing_redis::BatchSync;
using testing_redis::DecideSync;
using testing_redis::RedisCluster;
using testing_redis::RedisServer;

// The all-or-nothing semantics in C++ on traffik::Decide, as the reference for
// the script: `states` holds the buckets that exist (the script deletes a
// bucket that is full, so the model does too).
AllOrNothingResult ModelAllOrNothing(std::map<std::string, BucketState>& states,
                                     const std::vector<BucketOp>& ops, int64_t now) {
  std::map<std::string, std::optional<BucketState>> scratch;
  std::map<std::string, uint64_t> reset;  // of the last op on each key
  AllOrNothingResult out;
  out.applied = true;
  for (const BucketOp& op : ops) {
    if (!scratch.count(op.key)) {
      auto it = states.find(op.key);
      scratch[op.key] =
          it == states.end() ? std::nullopt : std::optional<BucketState>(it->second);
    }
    std::optional<BucketState>& st = scratch[op.key];
    BucketState next;
    const Decision d = Decide(st ? &*st : nullptr, op.rate, op.cost, now, &next);
    st = next;
    reset[op.key] = d.reset_ms;
    out.applied = out.applied && d.allowed;
    out.decisions.push_back(d);
  }
  if (out.applied) {
    for (const auto& [key, st] : scratch) {
      if (reset[key] > 0) {
        states[key] = *st;
      } else {
        states.erase(key);
      }
    }
  } else {
    for (size_t i = 0; i < ops.size(); ++i) {
      auto it = states.find(ops[i].key);
      BucketState unused;
      const Decision as_is = Decide(it == states.end() ? nullptr : &it->second,
                                    ops[i].rate, 0, now, &unused);
      out.decisions[i].remaining = as_is.remaining;
      out.decisions[i].reset_ms = as_is.reset_ms;
    }
  }
  return out;
}

RedisOptions OptionsFor(const RedisServer& server, int64_t timeout_ms = 250) {
  absl::StatusOr<RedisOptions> options = ParseRedisUrl(server.url());
  EXPECT_TRUE(options.ok()) << options.status();
  options->timeout_ms = timeout_ms;
  return *options;
}

// Waits (bounded) until `backend` answers a decision without error.
bool WaitUntilServing(Backend& backend, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (DecideSync(backend, "probe:{x}", Rate{1000, 1000}).ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// The number of `command` calls (INFO commandstats, lower case) `server` ran
// since its last CONFIG RESETSTAT; -1 when INFO fails.
int64_t CommandCalls(const RedisServer& server, absl::string_view command) {
  auto info = server.Command({"INFO", "commandstats"});
  if (!info.ok()) return -1;
  const std::string prefix = absl::StrCat("cmdstat_", command, ":calls=");
  const size_t at = info->find(prefix);
  if (at == std::string::npos) return 0;
  int64_t calls = 0;
  const size_t start = at + prefix.size();
  const size_t end = info->find(',', start);
  if (!absl::SimpleAtoi(info->substr(start, end - start), &calls)) return -1;
  return calls;
}

// Loads the backend's scripts on `server` and zeroes its command statistics,
// so CommandCalls counts only what follows (no NOSCRIPT round).
void LoadScriptsAndResetStats(const RedisServer& server) {
  const RedisScriptRegistry scripts;
  for (RedisScriptId id :
       {RedisScriptId::kBucket, RedisScriptId::kAllOrNothing, RedisScriptId::kEach}) {
    ASSERT_TRUE(server.Command({"SCRIPT", "LOAD", scripts.Body(id)}).ok());
  }
  ASSERT_TRUE(server.Command({"CONFIG", "RESETSTAT"}).ok());
}

class RedisBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto backend = RedisBackend::Create(OptionsFor(*server_));
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
    ASSERT_TRUE(WaitUntilServing(*backend_, std::chrono::seconds(5)));
  }

  std::unique_ptr<RedisServer> server_;
  std::unique_ptr<RedisBackend> backend_;
};

// Verifies the Lua script gives bit-identical answers to the C++ bucket on the
// same inputs, over random sequences of rates, costs and clock steps,
// including rates at the 2^53 edge.
TEST_F(RedisBackendTest, ScriptMatchesCppBucket) {
  const std::string& script = RedisBucketScriptWithExplicitNowForTesting();
  std::mt19937_64 rng(42);
  const std::vector<Rate> rates = {{1, 1},
                                   {3, 1000},
                                   {10, 60'000},
                                   {7861, 3'930'500},
                                   {1000, 7},
                                   {97, 86'400'000},
                                   {uint64_t{1} << 23, uint64_t{1} << 30},
                                   {(uint64_t{1} << 53) / 999'983, 999'983}};
  int checked = 0;
  for (size_t r = 0; r < rates.size(); ++r) {
    const Rate rate = rates[r];
    const std::string key = absl::StrCat("eq:{", r, "}");
    BucketState state;
    bool exists = false;
    int64_t now = 1'700'000'000'000;
    for (int step = 0; step < 60; ++step) {
      const uint64_t cost = 1 + rng() % std::min<uint64_t>(rate.capacity, 5);
      now += static_cast<int64_t>(rng() % (rate.period_ms / 3 + 2));
      if (step % 17 == 5) now -= 3;  // a clock step backwards
      BucketState next;
      const Decision want = Decide(exists ? &state : nullptr, rate, cost, now, &next);
      auto got = server_->Command({"EVAL", script, "1", key, absl::StrCat(rate.capacity),
                                   absl::StrCat(rate.period_ms), absl::StrCat(cost),
                                   absl::StrCat(now)});
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, absl::StrCat(want.allowed ? 1 : 0, "\n", want.wait_ms, "\n",
                                   want.remaining, "\n", want.reset_ms))
          << "rate " << rate.capacity << "/" << rate.period_ms << " step " << step;
      state = next;
      exists = want.reset_ms > 0;  // the script deletes a full bucket
      if (!exists) state = BucketState{};
      ++checked;
    }
  }
  EXPECT_EQ(checked, 480);
}

// Verifies the all-or-nothing script gives bit-identical answers to the C++
// model on the same inputs: random batches (repeated keys, several rates,
// refusals in any position), clock steps forwards and backwards.
TEST_F(RedisBackendTest, AllOrNothingScriptMatchesCppBucket) {
  const std::string& script = RedisAllOrNothingScriptWithExplicitNowForTesting();
  std::mt19937_64 rng(7);
  const std::vector<Rate> rates = {{3, 1000},
                                   {10, 60'000},
                                   {1, 1},
                                   {7861, 3'930'500},
                                   {(uint64_t{1} << 53) / 999'983, 999'983}};
  std::map<std::string, BucketState> states;
  int64_t now = 1'700'000'000'000;
  int applied = 0;
  int refused = 0;
  for (int step = 0; step < 300; ++step) {
    now += static_cast<int64_t>(rng() % 700);
    if (step % 23 == 11) now -= 5;  // a clock step backwards
    std::vector<BucketOp> ops;
    const size_t n = 1 + rng() % 5;
    for (size_t i = 0; i < n; ++i) {
      const size_t k = rng() % rates.size();
      const Rate rate = rates[k];
      const uint64_t cost = 1 + rng() % std::min<uint64_t>(rate.capacity, 4);
      ops.push_back({absl::StrCat("aeq:", k, ":{id}"), rate, cost});
    }
    const AllOrNothingResult want = ModelAllOrNothing(states, ops, now);
    std::vector<std::string> args = {"EVAL", script, absl::StrCat(n)};
    for (const BucketOp& op : ops) args.push_back(op.key);
    for (const BucketOp& op : ops) {
      args.push_back(absl::StrCat(op.rate.capacity));
      args.push_back(absl::StrCat(op.rate.period_ms));
      args.push_back(absl::StrCat(op.cost));
    }
    args.push_back(absl::StrCat(now));
    auto got = server_->Command(args);
    ASSERT_TRUE(got.ok()) << got.status();
    std::string expected = want.applied ? "1" : "0";
    for (const Decision& d : want.decisions) {
      absl::StrAppend(&expected, "\n", d.allowed ? 1 : 0, "\n", d.wait_ms, "\n",
                      d.remaining, "\n", d.reset_ms);
    }
    ASSERT_EQ(*got, expected) << "step " << step;
    (want.applied ? applied : refused) += 1;
  }
  // Both outcomes were exercised.
  EXPECT_GT(applied, 20);
  EXPECT_GT(refused, 20);
}

// Verifies both scripts match the C++ bucket when one key is hit under
// several rates (state written under one rate, read under another: a changed
// limit or multiplier), including (2^53, 1) over a 10/min bucket: the stored
// state is clamped to the current rate's full on both sides.
TEST_F(RedisBackendTest, ScriptsMatchCppBucketAcrossRates) {
  const std::string& single = RedisBucketScriptWithExplicitNowForTesting();
  const std::string& batch = RedisAllOrNothingScriptWithExplicitNowForTesting();
  std::mt19937_64 rng(11);
  const std::vector<Rate> rates = {{uint64_t{1} << 53, 1},
                                   {10, 60'000},
                                   {3, 1000},
                                   {1, 1},
                                   {(uint64_t{1} << 53) / 999'983, 999'983},
                                   {1000, 7}};
  const std::string key = "mix:{id}";
  std::map<std::string, BucketState> states;  // as ModelAllOrNothing keeps it
  int64_t now = 1'700'000'000'000;
  int checked = 0;
  for (int step = 0; step < 400; ++step) {
    now += static_cast<int64_t>(rng() % 50);
    if (step % 29 == 13) now -= 2;  // a clock step backwards
    if (step % 2 == 0) {
      const Rate rate = rates[rng() % rates.size()];
      const uint64_t cost = 1 + rng() % std::min<uint64_t>(rate.capacity, 3);
      auto it = states.find(key);
      BucketState next;
      const Decision want =
          Decide(it == states.end() ? nullptr : &it->second, rate, cost, now, &next);
      if (want.reset_ms > 0) {
        states[key] = next;
      } else {
        states.erase(key);
      }
      auto got = server_->Command({"EVAL", single, "1", key, absl::StrCat(rate.capacity),
                                   absl::StrCat(rate.period_ms), absl::StrCat(cost),
                                   absl::StrCat(now)});
      ASSERT_TRUE(got.ok()) << got.status();
      ASSERT_EQ(*got, absl::StrCat(want.allowed ? 1 : 0, "\n", want.wait_ms, "\n",
                                   want.remaining, "\n", want.reset_ms))
          << "single, rate " << rate.capacity << "/" << rate.period_ms << " step "
          << step;
      EXPECT_LE(want.reset_ms, rate.period_ms);
      EXPECT_LE(want.remaining, rate.capacity);
    } else {
      std::vector<BucketOp> ops;
      const size_t n = 1 + rng() % 3;
      for (size_t i = 0; i < n; ++i) {
        const Rate rate = rates[rng() % rates.size()];
        ops.push_back({key, rate, 1 + rng() % std::min<uint64_t>(rate.capacity, 3)});
      }
      const AllOrNothingResult want = ModelAllOrNothing(states, ops, now);
      std::vector<std::string> args = {"EVAL", batch, absl::StrCat(n)};
      for (const BucketOp& op : ops) args.push_back(op.key);
      for (const BucketOp& op : ops) {
        args.push_back(absl::StrCat(op.rate.capacity));
        args.push_back(absl::StrCat(op.rate.period_ms));
        args.push_back(absl::StrCat(op.cost));
      }
      args.push_back(absl::StrCat(now));
      auto got = server_->Command(args);
      ASSERT_TRUE(got.ok()) << got.status();
      std::string expected = want.applied ? "1" : "0";
      for (size_t i = 0; i < ops.size(); ++i) {
        const Decision& d = want.decisions[i];
        absl::StrAppend(&expected, "\n", d.allowed ? 1 : 0, "\n", d.wait_ms, "\n",
                        d.remaining, "\n", d.reset_ms);
        EXPECT_LE(d.reset_ms, ops[i].rate.period_ms);
        EXPECT_LE(d.remaining, ops[i].rate.capacity);
      }
      ASSERT_EQ(*got, expected) << "all-or-nothing step " << step;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 400);
}

// The each script's reply for `ops` (peek flags from op.peek) on the C++
// bucket at `now`, rendered as the harness renders it (one line per integer),
// updating `states` as the script updates Redis.
std::string ModelEach(std::map<std::string, BucketState>& states,
                      const std::vector<BucketOp>& ops, int64_t now) {
  std::vector<std::string> lines;
  for (const BucketOp& op : ops) {
    auto it = states.find(op.key);
    const BucketState* st = it == states.end() ? nullptr : &it->second;
    BucketState next;
    const Decision d = Decide(st, op.rate, op.cost, now, &next);
    for (uint64_t v :
         {uint64_t{d.allowed ? 1u : 0u}, d.wait_ms, d.remaining, d.reset_ms}) {
      lines.push_back(absl::StrCat(v));
    }
    if (op.peek) {
      BucketState unused;
      const Decision as_is = Decide(st, op.rate, 0, now, &unused);
      lines.push_back(absl::StrCat(as_is.remaining));
      lines.push_back(absl::StrCat(as_is.reset_ms));
    } else if (d.reset_ms > 0) {
      states[op.key] = next;
    } else {
      states.erase(op.key);
    }
  }
  return absl::StrJoin(lines, "\n");
}

// The each script's arguments for `ops` at `now` (explicit-now variant).
std::vector<std::string> EachArgs(const std::string& script,
                                  const std::vector<BucketOp>& ops, int64_t now) {
  std::vector<std::string> args = {"EVAL", script, absl::StrCat(ops.size())};
  std::string modes;
  for (const BucketOp& op : ops) {
    args.push_back(op.key);
    modes.push_back(op.peek ? 'p' : 'd');
  }
  args.push_back(modes);
  for (const BucketOp& op : ops) {
    args.push_back(absl::StrCat(op.rate.capacity));
    args.push_back(absl::StrCat(op.rate.period_ms));
    args.push_back(absl::StrCat(op.cost));
  }
  args.push_back(absl::StrCat(now));
  return args;
}

// Verifies the coalescing script (each item decided on its own, one clock)
// gives bit-identical answers to N single decisions of the C++ bucket at the
// same time: random batches with repeated keys (a later item sees the earlier
// take), several rates on one key, costs above the capacity, peeks between
// decisions, clock steps forwards and backwards.
TEST_F(RedisBackendTest, EachScriptMatchesCppBucket) {
  const std::string& script = RedisEachScriptWithExplicitNowForTesting();
  std::mt19937_64 rng(5);
  const std::vector<Rate> rates = {{1, 1},
                                   {3, 1000},
                                   {10, 60'000},
                                   {7861, 3'930'500},
                                   {1000, 7},
                                   {(uint64_t{1} << 53) / 999'983, 999'983},
                                   {uint64_t{1} << 53, 1}};
  std::map<std::string, BucketState> states;
  int64_t now = 1'700'000'000'000;
  int allowed = 0;
  int refused = 0;
  int repeated = 0;
  for (int step = 0; step < 300; ++step) {
    now += static_cast<int64_t>(rng() % 700);
    if (step % 19 == 7) now -= 4;  // a clock step backwards
    std::vector<BucketOp> ops;
    std::set<std::string> seen;
    const size_t n = 1 + rng() % 12;
    for (size_t i = 0; i < n; ++i) {
      const Rate rate = rates[rng() % rates.size()];
      // Costs up to twice the capacity where that stays within 2^53.
      const uint64_t max_cost = rate.capacity <= 10'000
                                    ? 2 * rate.capacity
                                    : std::min<uint64_t>(rate.capacity, 5);
      BucketOp op{absl::StrCat("each:", rng() % 4, ":{id}"), rate, 1 + rng() % max_cost};
      // Cost 0 now and then: on a full or new bucket the script deletes the key.
      if (rng() % 9 == 0) op.cost = 0;
      op.peek = rng() % 7 == 0;
      if (!seen.insert(op.key).second) ++repeated;
      ops.push_back(op);
    }
    const std::string want = ModelEach(states, ops, now);
    auto got = server_->Command(EachArgs(script, ops, now));
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(*got, want) << "step " << step;
    // What is stored matches too: a repeated key is written once per call,
    // with the state its last item left.
    for (int id = 0; id < 4; ++id) {
      const std::string key = absl::StrCat("each:", id, ":{id}");
      auto stored = server_->Command({"GET", key});
      ASSERT_TRUE(stored.ok()) << stored.status();
      const auto it = states.find(key);
      ASSERT_EQ(*stored, it == states.end() ? "(nil)"
                                            : absl::StrCat(it->second.scaled_tokens, ":",
                                                           it->second.last_ms))
          << "step " << step << " " << key;
    }
    std::vector<std::string> lines = absl::StrSplit(want, '\n');
    size_t at = 0;
    for (const BucketOp& op : ops) {
      (lines[at] == "1" ? allowed : refused) += 1;
      at += op.peek ? 6 : 4;
    }
  }
  EXPECT_GT(allowed, 100);
  EXPECT_GT(refused, 100);
  EXPECT_GT(repeated, 100);
}

// Verifies a key repeated within one coalesced call is read back exactly as
// the earlier item stored it, including a `last` ahead of the call's clock (a
// state written by a replica whose clock ran ahead): the stored value and
// every answer match the C++ bucket, then and on a later call.
TEST_F(RedisBackendTest, EachScriptRepeatedKeyKeepsStoredState) {
  const std::string& script = RedisEachScriptWithExplicitNowForTesting();
  const Rate rate{1000, 7};
  const std::string key = "rep:{id}";
  std::map<std::string, BucketState> states;
  const int64_t t = 1'700'000'000'000;
  // now, then the costs of one call's items, all on `key`.
  const std::vector<std::pair<int64_t, std::vector<uint64_t>>> calls = {
      {t + 10, {1}}, {t, {1, 2, 1}}, {t + 3, {3, 1}}, {t + 11, {1, 1}}, {t + 30, {1}}};
  for (const auto& [now, costs] : calls) {
    std::vector<BucketOp> ops;
    for (uint64_t cost : costs) ops.push_back({key, rate, cost});
    const std::string want = ModelEach(states, ops, now);
    auto got = server_->Command(EachArgs(script, ops, now));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, want) << "now " << now - t;
    auto stored = server_->Command({"GET", key});
    ASSERT_TRUE(stored.ok()) << stored.status();
    const BucketState& st = states[key];
    EXPECT_EQ(*stored, absl::StrCat(st.scaled_tokens, ":", st.last_ms))
        << "now " << now - t;
  }
}

// Verifies a key repeated within one coalesced call (a hot key) is written
// twice, by its first item and when the call's items are done, with the state
// and expiry its last item leaves: ten takes on one key run two SETs, not ten
// (the production script, on Redis' clock), the key holds 10 tokens taken and
// expires when the last take has refilled (not the first's), and a key seen
// once is written as before.
TEST_F(RedisBackendTest, EachScriptWritesARepeatedKeyTwicePerCall) {
  const Rate rate{100, 60'000};  // a token refills in 600 ms
  std::vector<BucketOp> ops;
  for (int i = 0; i < 10; ++i) ops.push_back({"hot:{h}", rate, 1});
  ops.push_back({"cold:{h}", rate, 1});
  std::vector<std::string> args = EachArgs(RedisEachScript(), ops, 0);
  args.pop_back();  // the production script reads Redis' clock: no `now`
  ASSERT_TRUE(server_->Command({"CONFIG", "RESETSTAT"}).ok());
  auto got = server_->Command(args);
  ASSERT_TRUE(got.ok()) << got.status();
  const std::vector<std::string> lines = absl::StrSplit(*got, '\n');
  ASSERT_EQ(lines.size(), 44u) << *got;
  for (size_t i = 0; i < 10; ++i) {
    EXPECT_EQ(lines[4 * i], "1") << i;                              // allowed
    EXPECT_EQ(lines[4 * i + 2], absl::StrCat(99 - i)) << i;         // remaining
    EXPECT_EQ(lines[4 * i + 3], absl::StrCat(600 * (i + 1))) << i;  // reset
  }
  auto stats = server_->Command({"INFO", "commandstats"});
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_THAT(*stats, HasSubstr("cmdstat_set:calls=3,"))
      << *stats;  // hot twice, cold once
  auto hot = server_->Command({"GET", "hot:{h}"});
  ASSERT_TRUE(hot.ok()) << hot.status();
  EXPECT_THAT(*hot, ::testing::StartsWith(absl::StrCat(90 * 60'000, ":")));
  auto ttl = server_->Command({"PTTL", "hot:{h}"});
  ASSERT_TRUE(ttl.ok()) << ttl.status();
  int64_t ms = 0;
  ASSERT_TRUE(absl::SimpleAtoi(*ttl, &ms)) << *ttl;
  EXPECT_GT(ms, 5000);  // the last take's 6000 ms, not the first's 600
  EXPECT_LE(ms, 6000);
  auto cold = server_->Command({"GET", "cold:{h}"});
  ASSERT_TRUE(cold.ok()) << cold.status();
  EXPECT_THAT(*cold, ::testing::StartsWith(absl::StrCat(99 * 60'000, ":")));
}

// One entry of the each script's reply as rendered lines: 4 (decision), 6
// (peek) or 1 (error) lines starting at `*at`, joined by '\n'.
std::string TakeEachEntry(const std::vector<std::string>& lines, bool peek, size_t* at) {
  uint64_t unused;
  if (*at < lines.size() && !absl::SimpleAtoi(lines[*at], &unused)) return lines[(*at)++];
  const size_t n = std::min(lines.size() - *at, size_t{peek ? 6u : 4u});
  std::vector<std::string> entry(lines.begin() + *at, lines.begin() + *at + n);
  *at += n;
  return absl::StrJoin(entry, "\n");
}

// Verifies every item of the coalescing script answers and writes exactly as
// its own call of the single bucket script would, on keys the fast path does
// not handle alone: a key of another type (decision, peek, cost 0), a
// malformed state, a value with no ':', a key that does not exist (peek, cost
// 0 then a take), repeated within one call and mixed with normal buckets; the
// calls of one item alone take the same paths. The same steps run on twin
// keys, one call of the each script against one single-script call per item.
TEST_F(RedisBackendTest, EachScriptMatchesOwnCallsOnOddKeys) {
  const std::string& each = RedisEachScriptWithExplicitNowForTesting();
  const std::string& single = RedisBucketScriptWithExplicitNowForTesting();
  const std::vector<Rate> rates = {{10, 60'000}, {3, 1000}, {uint64_t{1} << 53, 1}};
  const std::vector<std::string> kinds = {"list", "bad", "nocolon", "plain", "none"};
  auto key = [&](size_t kind, const char* twin) {
    return absl::StrCat("odd:", kinds[kind], ":{", twin, "}");
  };
  for (const char* twin : {"each", "single"}) {
    ASSERT_TRUE(server_->Command({"RPUSH", key(0, twin), "1"}).ok());
    ASSERT_TRUE(server_->Command({"SET", key(1, twin), "x:y"}).ok());
  }
  std::mt19937_64 rng(17);
  int64_t now = 1'700'000'000'000;
  std::map<std::string, int> errors;
  int decided = 0;
  for (int step = 0; step < 150; ++step) {
    now += static_cast<int64_t>(rng() % 300);
    if (step % 5 == 0) {
      for (const char* twin : {"each", "single"}) {
        ASSERT_TRUE(server_->Command({"SET", key(2, twin), "abc"}).ok());
      }
    }
    if (step % 7 == 0) {
      for (const char* twin : {"each", "single"}) {
        ASSERT_TRUE(server_->Command({"DEL", key(4, twin)}).ok());
      }
    }
    std::vector<BucketOp> ops;
    std::vector<size_t> op_kinds;
    const size_t n = 1 + rng() % 6;
    for (size_t i = 0; i < n; ++i) {
      op_kinds.push_back(rng() % kinds.size());
      BucketOp op{key(op_kinds.back(), "each"), rates[rng() % rates.size()], rng() % 4};
      op.peek = rng() % 4 == 0;
      ops.push_back(op);
    }
    auto got = server_->Command(EachArgs(each, ops, now));
    ASSERT_TRUE(got.ok()) << got.status();
    const std::vector<std::string> lines = absl::StrSplit(*got, '\n');
    size_t at = 0;
    for (size_t i = 0; i < n; ++i) {
      const BucketOp& op = ops[i];
      const std::string entry = TakeEachEntry(lines, op.peek, &at);
      std::vector<std::string> args = {"EVAL",
                                       single,
                                       "1",
                                       key(op_kinds[i], "single"),
                                       absl::StrCat(op.rate.capacity),
                                       absl::StrCat(op.rate.period_ms),
                                       absl::StrCat(op.cost),
                                       absl::StrCat(now)};
      if (op.peek) args.push_back("peek");
      auto own = server_->Command(args);
      if (own.ok()) {
        ASSERT_EQ(entry, *own) << "step " << step << " item " << i << " " << op.key;
        ++decided;
      } else {
        // The same error: its first word, and for a Lua error the same text.
        const std::string word = entry.substr(0, entry.find(' '));
        ASSERT_THAT(entry, ::testing::MatchesRegex("[A-Z]+ .*")) << "step " << step;
        EXPECT_THAT(std::string(own.status().message()),
                    ::testing::StartsWith(absl::StrCat(word, " ")))
            << "step " << step << " item " << i << " " << entry;
        if (op_kinds[i] == 1) {
          EXPECT_THAT(entry, HasSubstr("malformed bucket state"));
          EXPECT_THAT(own.status().message(), HasSubstr("malformed bucket state"));
        }
        ++errors[word];
      }
    }
    ASSERT_EQ(at, lines.size()) << *got;
    // Both twins hold the same: type and value of every key.
    for (size_t kind = 0; kind < kinds.size(); ++kind) {
      for (const char* command : {"TYPE", "GET"}) {
        if (kind == 0 && std::string(command) == "GET") continue;  // WRONGTYPE
        auto a = server_->Command({command, key(kind, "each")});
        auto b = server_->Command({command, key(kind, "single")});
        ASSERT_TRUE(a.ok() && b.ok()) << a.status() << b.status();
        ASSERT_EQ(*a, *b) << "step " << step << " " << command << " " << kinds[kind];
      }
    }
  }
  EXPECT_GT(errors["WRONGTYPE"], 20);
  EXPECT_GT(errors["ERR"], 20);
  EXPECT_GT(decided, 200);
  EXPECT_EQ(*server_->Command({"LLEN", key(0, "each")}), "1");
  EXPECT_EQ(*server_->Command({"GET", key(1, "each")}), "x:y");
}

// Verifies the coalescing script decides each item on its own: an item whose
// key holds another type answers with that error while the items before and
// after it are still decided and stored (the call never stops half-way).
TEST_F(RedisBackendTest, EachScriptAnswersErrorsPerItem) {
  ASSERT_TRUE(server_->Command({"RPUSH", "eerr:{b}", "1"}).ok());
  const Rate rate{5, 60'000};
  const std::vector<BucketOp> ops = {
      {"eerr:{a}", rate, 1}, {"eerr:{b}", rate, 1}, {"eerr:{a}", rate, 2}};
  auto got = server_->Command(
      EachArgs(RedisEachScriptWithExplicitNowForTesting(), ops, 1'700'000'000'000));
  ASSERT_TRUE(got.ok()) << got.status();
  const std::vector<std::string> lines = absl::StrSplit(*got, '\n');
  ASSERT_EQ(lines.size(), 9u) << *got;
  EXPECT_EQ(lines[2], "4");  // remaining after the first item
  EXPECT_THAT(lines[4], ::testing::StartsWith("WRONGTYPE"));
  EXPECT_EQ(lines[5], "1");  // the third item was decided
  EXPECT_EQ(lines[7], "2");
  EXPECT_EQ(*server_->Command({"LLEN", "eerr:{b}"}), "1");
}

// Verifies the backend answers sanely (no "unexpected reply") when one key
// is decided under (2^53, 1) and then under 10/min, singly and in one
// all-or-nothing batch: the Lua state is clamped to the rate's full, so the
// script never returns the negative reset_ms that was rejected as an
// unexpected reply (UNAVAILABLE, i.e. fail open for `allow` tenants).
TEST_F(RedisBackendTest, KeyUnderAnotherRateAnswersSanely) {
  const Rate huge{uint64_t{1} << 53, 1};
  const Rate small{10, 60'000};
  ASSERT_TRUE(DecideSync(*backend_, "r:{a}", huge).ok());
  auto d = DecideSync(*backend_, "r:{a}", small);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->allowed);
  EXPECT_EQ(d->remaining, 9u);
  EXPECT_LE(d->reset_ms, 6000u);

  auto all = AllOrNothingSync(*backend_, {{"r:{b}", huge, 1}, {"r:{b}", small, 1}});
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_TRUE(all->applied);
  EXPECT_EQ(all->decisions[1].remaining, 9u);
  EXPECT_LE(all->decisions[1].reset_ms, 6000u);
  auto batch = BatchSync(*backend_, {{"r:{c}", huge, 1}, {"r:{c}", small, 1}});
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ((*batch)[1].remaining, 9u);
}

// Verifies a reply that is no bucket answer (a script error on a corrupt
// bucket, a key of another type) is INTERNAL, not UNAVAILABLE, singly and
// inside a coalesced call: not an outage, so no on_backend_error policy turns
// it into an allowed hit.
TEST_F(RedisBackendTest, MalformedStateIsInternal) {
  ASSERT_TRUE(server_->Command({"SET", "bad:{a}", "x:y"}).ok());
  ASSERT_TRUE(server_->Command({"RPUSH", "bad:{b}", "1"}).ok());
  for (const char* key : {"bad:{a}", "bad:{b}"}) {
    auto d = DecideSync(*backend_, key, Rate{10, 60'000});
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInternal) << key << d.status();
    auto all = AllOrNothingSync(*backend_, {{key, Rate{10, 60'000}, 1}});
    EXPECT_EQ(all.status().code(), absl::StatusCode::kInternal) << key << all.status();
    // The same inside a coalesced call (a batch of two on one node).
    auto batch = BatchSync(*backend_,
                           {{key, Rate{10, 60'000}, 1}, {"ok:{z}", Rate{10, 60'000}, 1}});
    EXPECT_EQ(batch.status().code(), absl::StatusCode::kInternal)
        << key << batch.status();
  }
}

// The engine over this Redis: one tenant failing open, inline specs allowed.
class RedisEngineTest : public RedisBackendTest {
 protected:
  void SetUp() override {
    RedisBackendTest::SetUp();
    if (HasFatalFailure()) return;
    Config config;
    TenantConfig tenant;
    tenant.name = tenant.prefix = "open";
    tenant.backend = "redis";
    tenant.on_backend_error = BackendErrorPolicy::kAllow;
    config.tenants = {tenant};
    config.default_tenant = "open";
    auto snap = Snapshot::Build(
        config,
        [this](const TenantConfig&) -> absl::StatusOr<Backend*> {
          return backend_.get();
        },
        metrics_);
    ASSERT_TRUE(snap.ok()) << snap.status();
    engine_ = std::make_unique<Engine>(*snap);
  }

  static HitRequest Inline(uint64_t limit, uint64_t period_ms) {
    HitRequest r;
    r.identifier = "victim";
    r.throttle_uid = "adhoc";
    r.has_spec = true;
    r.spec_limit = limit;
    r.spec_period_ms = period_ms;
    return r;
  }

  absl::StatusOr<Decision> Call(const HitRequest& r) {
    std::promise<absl::StatusOr<Decision>> promise;
    engine_->ShouldThrottle(
        r, [&promise](absl::StatusOr<Decision> d) { promise.set_value(std::move(d)); });
    return promise.get_future().get();
  }

  absl::StatusOr<AllOrNothingResult> Batch(const std::vector<HitRequest>& r,
                                           bool all_or_nothing) {
    std::promise<absl::StatusOr<AllOrNothingResult>> promise;
    engine_->ShouldThrottleBatch(r, all_or_nothing,
                                 [&promise](absl::StatusOr<AllOrNothingResult> d) {
                                   promise.set_value(std::move(d));
                                 });
    return promise.get_future().get();
  }

  Metrics metrics_;
  std::unique_ptr<Engine> engine_;
};

// Verifies on Redis that a drained 10/min inline bucket stays drained after
// calls with spec (2^53, 1) on the same uid and identifier (single, batch,
// all-or-nothing), with sane numbers and no error (so nothing fails open).
TEST_F(RedisEngineTest, OtherSpecCannotRefillInlineBucket) {
  const uint64_t kHuge = uint64_t{1} << 53;
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Call(Inline(10, 60'000))->allowed);
  ASSERT_FALSE(Call(Inline(10, 60'000))->allowed);
  // Real time passes on Redis, so a shared bucket would refill to (2^53, 1)'s
  // full.
  std::this_thread::sleep_for(std::chrono::milliseconds(5));

  auto big = Call(Inline(kHuge, 1));
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_TRUE(big->allowed);
  EXPECT_LE(big->reset_ms, 1u);
  auto still = Call(Inline(10, 60'000));
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_FALSE(still->allowed);
  EXPECT_EQ(still->remaining, 0u);

  for (bool all_or_nothing : {false, true}) {
    SCOPED_TRACE(all_or_nothing ? "all_or_nothing" : "batch");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    auto out =
        Batch({Inline(kHuge, 1), Inline(10, 60'000), Inline(kHuge, 1)}, all_or_nothing);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_EQ(out->applied, !all_or_nothing);
    EXPECT_FALSE(out->decisions[1].allowed);
    EXPECT_EQ(out->decisions[1].remaining, 0u);
    EXPECT_LE(out->decisions[1].reset_ms, 60'000u);
    EXPECT_GT(out->decisions[1].wait_ms, 0u);
    EXPECT_LE(out->decisions[1].wait_ms, 6'000u);
    for (size_t i : {0, 2}) {
      EXPECT_LE(out->decisions[i].reset_ms, 1u);
      EXPECT_LE(out->decisions[i].remaining, kHuge);
    }
  }
  EXPECT_FALSE(Call(Inline(10, 60'000))->allowed);
  // No backend error, which this tenant would have answered by failing open.
  EXPECT_THAT(metrics_.RenderText(), HasSubstr("policy=\"allow\",tenant=\"open\"} 0"));
}

// Verifies DecideAllOrNothing on Redis: tokens are taken from every bucket
// or from none, stored buckets are untouched by a refused batch, and the
// script is reloaded after a SCRIPT FLUSH.
TEST_F(RedisBackendTest, AllOrNothing) {
  const Rate burst{2, 60'000};
  const Rate sustained{5, 3'600'000};
  const std::vector<BucketOp> ops = {{"t:burst:{user:1}", burst, 1},
                                     {"t:sustained:{user:1}", sustained, 1}};
  for (int i = 0; i < 2; ++i) {
    auto out = AllOrNothingSync(*backend_, ops);
    ASSERT_TRUE(out.ok()) << out.status();
    EXPECT_TRUE(out->applied);
    EXPECT_EQ(out->decisions[1].remaining, 4u - i);
  }
  const std::string before = *server_->Command({"GET", "t:sustained:{user:1}"});
  auto refused = AllOrNothingSync(*backend_, ops);
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_FALSE(refused->applied);
  EXPECT_FALSE(refused->decisions[0].allowed);
  EXPECT_GT(refused->decisions[0].wait_ms, 29'000u);
  EXPECT_EQ(refused->decisions[1].wait_ms, 0u);
  EXPECT_EQ(refused->decisions[1].limit, 5u);
  EXPECT_EQ(refused->decisions[1].remaining, 3u);
  EXPECT_EQ(*server_->Command({"GET", "t:sustained:{user:1}"}), before);
  // A refused batch creates no bucket.
  auto fresh = AllOrNothingSync(
      *backend_, {{"t:new:{user:1}", sustained, 1}, {"t:burst:{user:1}", burst, 1}});
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_FALSE(fresh->applied);
  EXPECT_EQ(*server_->Command({"EXISTS", "t:new:{user:1}"}), "0");

  ASSERT_TRUE(server_->Command({"SCRIPT", "FLUSH"}).ok());
  auto other = AllOrNothingSync(*backend_, {{"t:burst:{user:2}", burst, 1},
                                            {"t:burst:{user:2}", burst, 1},
                                            {"t:sustained:{user:2}", sustained, 5}});
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_TRUE(other->applied);
  EXPECT_EQ(other->decisions[1].remaining, 0u);
  EXPECT_EQ(other->decisions[2].remaining, 0u);
  auto empty = AllOrNothingSync(*backend_, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->applied);
}

// Verifies all-or-nothing batches are exact under concurrency on Redis: the
// sustained bucket loses exactly one token per applied batch.
TEST_F(RedisBackendTest, AllOrNothingExactUnderConcurrency) {
  const Rate burst{40, 3'600'000};
  const Rate sustained{1000, 3'600'000};
  constexpr int kThreads = 4;
  constexpr int kPerThread = 60;
  std::atomic<int> applied{0};
  std::atomic<int> errors{0};
  std::atomic<int> pending{kThreads * kPerThread};
  std::promise<void> all_done;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        backend_->DecideAllOrNothing(
            std::vector<BucketOp>{{"c:burst:{u}", burst, 1},
                                  {"c:sustained:{u}", sustained, 1}},
            [&](absl::StatusOr<AllOrNothingResult> r) {
              if (!r.ok()) {
                errors.fetch_add(1);
              } else if (r->applied) {
                applied.fetch_add(1);
              }
              if (pending.fetch_sub(1) == 1) all_done.set_value();
            });
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(all_done.get_future().wait_for(std::chrono::seconds(20)),
            std::future_status::ready);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(applied.load(), 40);
  auto d = DecideSync(*backend_, "c:sustained:{u}", sustained);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->remaining, 1000u - 40 - 1);
}

struct Step {
  uint64_t cost;
  bool allowed;
  uint64_t remaining;
  uint64_t wait_ms;  // expected within a tolerance (real time passes on Redis)
};
struct Scenario {
  const char* name;
  Rate rate;
  std::vector<Step> steps;
};

// Verifies the same scenario table gives the same answers on the memory and
// the Redis backends.
TEST_F(RedisBackendTest, ScenarioTableMatchesMemory) {
  const std::vector<Scenario> scenarios = {
      {"burst",
       {3, 3'600'000},
       {{1, true, 2, 0},
        {1, true, 1, 0},
        {1, true, 0, 0},
        {1, false, 0, 1'200'000},
        {1, false, 0, 1'200'000}}},
      {"cost",
       {10, 600'000},
       {{7, true, 3, 0}, {5, false, 3, 120'000}, {3, true, 0, 0}, {1, false, 0, 60'000}}},
      {"single", {1, 86'400'000}, {{1, true, 0, 0}, {1, false, 0, 86'400'000}}},
      {"full-cost",
       {4, 40'000},
       {{4, true, 0, 0}, {4, false, 0, 40'000}, {1, false, 0, 10'000}}},
  };
  FakeClock clock;
  MemoryBackend memory(clock, MemoryBackendOptions{1000, 0});
  for (const Scenario& sc : scenarios) {
    for (Backend* backend :
         {static_cast<Backend*>(&memory), static_cast<Backend*>(backend_.get())}) {
      const std::string key = absl::StrCat("scenario:{", sc.name, "}");
      for (size_t i = 0; i < sc.steps.size(); ++i) {
        const Step& step = sc.steps[i];
        auto d = DecideSync(*backend, key, sc.rate, step.cost);
        ASSERT_TRUE(d.ok()) << d.status();
        SCOPED_TRACE(absl::StrCat(sc.name, " step ", i, " on ", backend->Name()));
        EXPECT_EQ(d->allowed, step.allowed);
        EXPECT_EQ(d->remaining, step.remaining);
        EXPECT_EQ(d->limit, sc.rate.capacity);
        EXPECT_LE(d->wait_ms, step.wait_ms);
        EXPECT_GE(d->wait_ms + 1000, step.wait_ms);  // at most 1 s of real refill
        if (!step.allowed) {
          EXPECT_GE(d->wait_ms, 1u);
        }
      }
    }
  }
}

// Verifies keys carry a TTL equal to the time until the bucket is full again,
// and vanish once it is.
TEST_F(RedisBackendTest, KeysExpireWhenFull) {
  auto d = DecideSync(*backend_, "gold:{api:user:1}", Rate{10, 60'000}, 2);
  ASSERT_TRUE(d.ok());
  auto pttl = server_->Command({"PTTL", "gold:{api:user:1}"});
  ASSERT_TRUE(pttl.ok()) << pttl.status();
  int64_t ms = 0;
  ASSERT_TRUE(absl::SimpleAtoi(*pttl, &ms));
  EXPECT_GT(ms, 11'000);
  EXPECT_LE(ms, 12'000);

  ASSERT_TRUE(DecideSync(*backend_, "short:{x}", Rate{1, 150}).ok());
  EXPECT_EQ(*server_->Command({"EXISTS", "short:{x}"}), "1");
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(*server_->Command({"EXISTS", "short:{x}"}), "0");
}

// Verifies identifiers are binary-safe: NUL and high bytes make distinct keys.
TEST_F(RedisBackendTest, BinarySafeKeys) {
  const Rate rate{1, 3'600'000};
  const std::string a("p:{u:a\0b}", 9), b("p:{u:a\0c}", 9), c("p:{u:\xff}", 7);
  EXPECT_TRUE(DecideSync(*backend_, a, rate)->allowed);
  EXPECT_TRUE(DecideSync(*backend_, b, rate)->allowed);
  EXPECT_TRUE(DecideSync(*backend_, c, rate)->allowed);
  EXPECT_FALSE(DecideSync(*backend_, a, rate)->allowed);
}

// Verifies a batch goes through in order as if hit one by one.
TEST_F(RedisBackendTest, BatchInOrder) {
  const Rate rate{2, 3'600'000};
  auto out = BatchSync(
      *backend_,
      {{"b:{k}", rate, 1}, {"b:{k}", rate, 1}, {"b:{k}", rate, 1}, {"b:{j}", rate, 2}});
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 4u);
  EXPECT_TRUE((*out)[0].allowed);
  EXPECT_TRUE((*out)[1].allowed);
  EXPECT_FALSE((*out)[2].allowed);
  EXPECT_TRUE((*out)[3].allowed);
  EXPECT_EQ((*out)[3].remaining, 0u);
}

// Verifies the decisions queued at one wake-up travel as one script call:
// a batch of 50 items on 10 keys is one EVALSHA (not 50), and each item's
// answer is what it would be one by one, in order.
TEST_F(RedisBackendTest, CoalescesQueuedDecisionsIntoOneCall) {
  LoadScriptsAndResetStats(*server_);
  if (HasFatalFailure()) return;
  const Rate rate{3, 3'600'000};
  std::vector<BucketOp> ops;
  for (int i = 0; i < 50; ++i)
    ops.push_back({absl::StrCat("co:{", i % 10, "}"), rate, 1});
  auto out = BatchSync(*backend_, ops);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), 50u);
  for (int i = 0; i < 50; ++i) {
    const int nth = i / 10;  // earlier hits on this key
    EXPECT_EQ((*out)[i].allowed, nth < 3) << i;
    EXPECT_EQ((*out)[i].remaining, nth < 3 ? 2u - nth : 0u) << i;
    EXPECT_EQ((*out)[i].limit, 3u);
  }
  EXPECT_EQ(CommandCalls(*server_, "evalsha"), 1);
  // Over kMaxEachItems (128): several calls, still in order on one key.
  std::vector<BucketOp> many(300, BucketOp{"co:{many}", Rate{200, 3'600'000}, 1});
  auto big = BatchSync(*backend_, many);
  ASSERT_TRUE(big.ok()) << big.status();
  for (int i = 0; i < 300; ++i) {
    EXPECT_EQ((*big)[i].allowed, i < 200) << i;
    EXPECT_EQ((*big)[i].remaining, i < 200 ? 199u - i : 0u) << i;
  }
  EXPECT_EQ(CommandCalls(*server_, "evalsha"), 1 + 3);
}

// Verifies commands larger than a socket takes at once (a batch of 1024
// items with 8 KB keys: ~8 MB sent by one wake-up on one connection) still
// arrive whole and in order: what send() does not take is queued behind it
// through the bufferevent. Every key allows exactly its limit, in order.
TEST_F(RedisBackendTest, CommandsLargerThanTheSocketTakesArriveWhole) {
  constexpr int kKeys = 16;
  constexpr int kItems = 1024;
  constexpr uint64_t kLimit = 50;
  std::vector<BucketOp> ops;
  for (int i = 0; i < kItems; ++i) {
    const int k = i % kKeys;
    ops.push_back(
        {absl::StrCat("big:{", k, "}", std::string(8000, static_cast<char>('a' + k))),
         Rate{kLimit, 3'600'000}, 1});
  }
  // ~8 MB through Redis can take longer than the default 250 ms per command
  // under a sanitizer on a busy host; this test is about bytes arriving whole,
  // not about deadlines.
  auto backend = RedisBackend::Create(OptionsFor(*server_, /*timeout_ms=*/10000));
  ASSERT_TRUE(backend.ok()) << backend.status();
  ASSERT_TRUE(WaitUntilServing(**backend, std::chrono::seconds(5)));
  LoadScriptsAndResetStats(*server_);
  if (HasFatalFailure()) return;
  auto out = BatchSync(**backend, ops);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->size(), static_cast<size_t>(kItems));
  for (int i = 0; i < kItems; ++i) {
    const uint64_t nth = static_cast<uint64_t>(i / kKeys);  // earlier hits on this key
    EXPECT_EQ((*out)[i].allowed, nth < kLimit) << i;
    EXPECT_EQ((*out)[i].remaining, nth < kLimit ? kLimit - 1 - nth : 0u) << i;
  }
  // 64 KiB of keys per call: 8 of these keys, so 128 calls, all sent on one
  // connection by one wake-up (~8 MB).
  EXPECT_EQ(CommandCalls(*server_, "evalsha"), kItems / 8);
}

// Verifies single decisions from many threads are coalesced (fewer EVALSHA
// calls than decisions) and stay exact: every key allows exactly its limit.
TEST_F(RedisBackendTest, CoalescedConcurrentDecisionsStayExact) {
  LoadScriptsAndResetStats(*server_);
  if (HasFatalFailure()) return;
  const Rate rate{30, 3'600'000};
  constexpr int kThreads = 8;
  constexpr int kPerThread = 150;
  constexpr int kKeys = 20;
  std::array<std::atomic<int>, kKeys> allowed{};
  std::atomic<int> errors{0};
  std::atomic<int> pending{kThreads * kPerThread};
  std::promise<void> all_done;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int k = (t + i) % kKeys;
        backend_->Decide(absl::StrCat("cc:{", k, "}"), rate, 1,
                         [&, k](absl::StatusOr<Decision> d) {
                           if (!d.ok()) {
                             errors.fetch_add(1);
                           } else if (d->allowed) {
                             allowed[k].fetch_add(1);
                           }
                           if (pending.fetch_sub(1) == 1) all_done.set_value();
                         });
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(all_done.get_future().wait_for(std::chrono::seconds(20)),
            std::future_status::ready);
  EXPECT_EQ(errors.load(), 0);
  for (int k = 0; k < kKeys; ++k) EXPECT_EQ(allowed[k].load(), 30) << k;
  const int64_t calls = CommandCalls(*server_, "evalsha");
  EXPECT_GT(calls, 0);
  EXPECT_LT(calls, kThreads * kPerThread);
}

// Verifies an item that fails inside a coalesced call (a key of another
// type) fails alone, as its own call would (INTERNAL), while the items
// before and after it are decided once each, in the same single call.
TEST_F(RedisBackendTest, CoalescedCallFailsOnlyTheBadItem) {
  ASSERT_TRUE(server_->Command({"RPUSH", "ci:{bad}", "1"}).ok());
  LoadScriptsAndResetStats(*server_);
  if (HasFatalFailure()) return;
  const Rate rate{5, 3'600'000};
  std::vector<BucketOp> ops = {{"ci:{a}", rate, 1},
                               {"ci:{bad}", rate, 1},
                               {"ci:{a}", rate, 1},
                               {"ci:{c}", rate, 2}};
  auto out = BatchSync(*backend_, ops);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInternal) << out.status();
  EXPECT_THAT(std::string(out.status().message()), HasSubstr("WRONGTYPE"));
  EXPECT_EQ(CommandCalls(*server_, "evalsha"), 1);
  EXPECT_EQ(DecideSync(*backend_, "ci:{a}", rate)->remaining, 2u);
  EXPECT_EQ(DecideSync(*backend_, "ci:{c}", rate)->remaining, 2u);
  EXPECT_EQ(*server_->Command({"LLEN", "ci:{bad}"}), "1");
  // A peek item in a coalesced call writes nothing and sees the earlier take.
  ops = {{"ci:{p}", rate, 2}, {"ci:{p}", rate, 1}, {"ci:{p}", rate, 1}};
  ops[1].peek = true;
  auto peeked = BatchSync(*backend_, ops);
  ASSERT_TRUE(peeked.ok()) << peeked.status();
  EXPECT_EQ((*peeked)[0].remaining, 3u);
  EXPECT_EQ((*peeked)[1].remaining, 2u);
  EXPECT_EQ((*peeked)[2].remaining, 2u);
}

// Verifies a coalesced call to a Redis that lost its scripts (NOSCRIPT) is
// sent again with EVAL and every item is answered once, in order.
TEST_F(RedisBackendTest, CoalescedCallReloadsScriptAfterFlush) {
  ASSERT_TRUE(server_->Command({"SCRIPT", "FLUSH"}).ok());
  const Rate rate{3, 3'600'000};
  auto out = BatchSync(*backend_, std::vector<BucketOp>(5, BucketOp{"cf:{k}", rate, 1}));
  ASSERT_TRUE(out.ok()) << out.status();
  for (int i = 0; i < 5; ++i) EXPECT_EQ((*out)[i].allowed, i < 3) << i;
  const RedisScriptRegistry scripts;
  EXPECT_EQ(*server_->Command({"SCRIPT", "EXISTS", scripts.Sha1(RedisScriptId::kEach)}),
            "1");
}

// Verifies the backend recovers when Redis forgets the script (NOSCRIPT).
TEST_F(RedisBackendTest, ReloadsScriptAfterFlush) {
  ASSERT_TRUE(DecideSync(*backend_, "s:{1}", Rate{5, 60'000}).ok());
  ASSERT_TRUE(server_->Command({"SCRIPT", "FLUSH"}).ok());
  auto d = DecideSync(*backend_, "s:{1}", Rate{5, 60'000});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->remaining, 3u);
  EXPECT_TRUE(DecideSync(*backend_, "s:{1}", Rate{5, 60'000}).ok());
}

// Verifies the locally computed digests are the ones Redis computes (SCRIPT
// LOAD), that connecting sends no SCRIPT LOAD (the all-or-nothing script is
// unknown to Redis until a batch runs), and that a server without the script
// holds it after one decision (the EVALSHA's NOSCRIPT retried as EVAL).
TEST_F(RedisBackendTest, LocalScriptDigestsMatchRedis) {
  const RedisScriptRegistry scripts;
  const std::string& bucket_sha = scripts.Sha1(RedisScriptId::kBucket);
  const std::string& batch_sha = scripts.Sha1(RedisScriptId::kAllOrNothing);
  EXPECT_EQ(*server_->Command({"SCRIPT", "EXISTS", batch_sha}), "0");
  ASSERT_TRUE(server_->Command({"SCRIPT", "FLUSH"}).ok());
  EXPECT_EQ(*server_->Command({"SCRIPT", "EXISTS", bucket_sha}), "0");
  ASSERT_TRUE(DecideSync(*backend_, "d:{1}", Rate{5, 60'000}).ok());
  EXPECT_EQ(*server_->Command({"SCRIPT", "EXISTS", bucket_sha}), "1");
  ASSERT_TRUE(AllOrNothingSync(*backend_, {{"d:{1}", Rate{5, 60'000}, 1}}).ok());
  EXPECT_EQ(*server_->Command({"SCRIPT", "EXISTS", batch_sha}), "1");
  for (RedisScriptId id : {RedisScriptId::kBucket, RedisScriptId::kAllOrNothing}) {
    auto sha = server_->Command({"SCRIPT", "LOAD", scripts.Body(id)});
    ASSERT_TRUE(sha.ok()) << sha.status();
    EXPECT_EQ(*sha, scripts.Sha1(id));
  }
}

// Verifies exactness under concurrency: many threads pipelining on one key,
// exactly `limit` allowed.
TEST_F(RedisBackendTest, ExactUnderConcurrency) {
  const Rate rate{500, 3'600'000};
  constexpr int kThreads = 8;
  constexpr int kPerThread = 150;
  std::atomic<int> allowed{0};
  std::atomic<int> errors{0};
  std::atomic<int> pending{kThreads * kPerThread};
  std::promise<void> all_done;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        backend_->Decide("hot:{k}", rate, 1, [&](absl::StatusOr<Decision> d) {
          if (!d.ok()) {
            errors.fetch_add(1);
          } else if (d->allowed) {
            allowed.fetch_add(1);
          }
          if (pending.fetch_sub(1) == 1) all_done.set_value();
        });
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_EQ(all_done.get_future().wait_for(std::chrono::seconds(20)),
            std::future_status::ready);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(allowed.load(), 500);
}

// Verifies a Redis that stops answering makes decisions fail with
// UNAVAILABLE within about the timeout, and that service resumes after.
TEST_F(RedisBackendTest, UnresponsiveRedisTimesOut) {
  ASSERT_TRUE(server_->Command({"CLIENT", "PAUSE", "1500", "ALL"}).ok());
  const auto start = std::chrono::steady_clock::now();
  auto d = DecideSync(*backend_, "t:{1}", Rate{5, 60'000});
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(d.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(server_->url()));
  EXPECT_LT(took, std::chrono::milliseconds(1000));
  EXPECT_TRUE(WaitUntilServing(*backend_, std::chrono::seconds(6)));
}

// Verifies a coalesced call keeps the per-decision deadline: to a Redis that
// stops answering, every item of a batch fails with UNAVAILABLE within about
// the timeout, and service resumes after.
TEST_F(RedisBackendTest, UnresponsiveRedisTimesOutCoalescedCall) {
  ASSERT_TRUE(server_->Command({"CLIENT", "PAUSE", "1500", "ALL"}).ok());
  const auto start = std::chrono::steady_clock::now();
  auto out = BatchSync(*backend_,
                       std::vector<BucketOp>(10, BucketOp{"tc:{1}", Rate{5, 60'000}, 1}));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(out.status().code(), absl::StatusCode::kUnavailable) << out.status();
  EXPECT_LT(took, std::chrono::milliseconds(1000));
  EXPECT_TRUE(WaitUntilServing(*backend_, std::chrono::seconds(6)));
  auto again = BatchSync(
      *backend_, std::vector<BucketOp>(3, BucketOp{"tc:{2}", Rate{5, 60'000}, 1}));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)[2].remaining, 2u);
}

// Waits (bounded) until `server` holds `n` clients blocked (here: paused by
// CLIENT PAUSE WRITE in the middle of a script call).
bool WaitForBlockedClients(const RedisServer& server, int n) {
  const std::string want = absl::StrCat("blocked_clients:", n, "\r");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    auto info = server.Command({"INFO", "clients"});
    if (info.ok() && info->find(want) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return false;
}

// A backend with one connection to `server` (pool_size 1) that has answered
// a decision, or why not.
absl::StatusOr<std::unique_ptr<RedisBackend>> OneConnectionBackend(
    const RedisServer& server, int64_t timeout_ms) {
  RedisOptions options = OptionsFor(server, timeout_ms);
  options.pool_size = 1;
  auto backend = RedisBackend::Create(options);
  if (backend.ok() && !WaitUntilServing(**backend, std::chrono::seconds(5))) {
    return absl::UnavailableError("the backend did not serve within 5 s");
  }
  return backend;
}

// Decisions (cost 1) made through a backend, each tagged with an index; the
// answers are kept as (index, result) in the order they completed.
class Recorder {
 public:
  explicit Recorder(int expected) : pending_(expected) {}
  void Decide(Backend& backend, const std::string& key, const Rate& rate, int index) {
    backend.Decide(key, rate, 1, [this, index](absl::StatusOr<Decision> d) {
      {
        std::lock_guard<std::mutex> lock(mu_);
        answers_.emplace_back(index, std::move(d));
      }
      if (pending_.fetch_sub(1) == 1) done_.set_value();
    });
  }
  // Every answer (bounded wait); empty when some never came.
  std::vector<std::pair<int, absl::StatusOr<Decision>>> Wait() {
    if (done_.get_future().wait_for(std::chrono::seconds(10)) !=
        std::future_status::ready) {
      return {};
    }
    std::lock_guard<std::mutex> lock(mu_);
    return answers_;
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<int, absl::StatusOr<Decision>>> answers_;
  std::atomic<int> pending_;
  std::promise<void> done_;
};

// Verifies decisions that arrive while every connection of the node has a
// call in flight wait, and leave as one coalesced call once it is answered:
// one connection, Redis holding the first decision's call (CLIENT PAUSE
// WRITE), ten more decisions enqueued one by one and apart in time (so each
// would have left at its own wake-up) travel as one EVALSHA — two calls in
// all — and each is answered in order, exactly.
TEST_F(RedisBackendTest, DecisionsArrivingWhileBusyLeaveAsOneCall) {
  auto backend = OneConnectionBackend(*server_, /*timeout_ms=*/5000);
  ASSERT_TRUE(backend.ok()) << backend.status();
  LoadScriptsAndResetStats(*server_);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(server_->Command({"CLIENT", "PAUSE", "10000", "WRITE"}).ok());
  const Rate rate{20, 3'600'000};
  Recorder recorder(11);
  recorder.Decide(**backend, "busy:{k}", rate, 0);
  const bool held_by_redis = WaitForBlockedClients(*server_, 1);
  for (int i = 1; i <= 10; ++i) {
    recorder.Decide(**backend, "busy:{k}", rate, i);
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  ASSERT_TRUE(server_->Command({"CLIENT", "UNPAUSE"}).ok());
  ASSERT_TRUE(held_by_redis);
  const auto answers = recorder.Wait();
  ASSERT_EQ(answers.size(), 11u);
  for (int i = 0; i <= 10; ++i) {
    EXPECT_EQ(answers[i].first, i);
    ASSERT_TRUE(answers[i].second.ok()) << answers[i].second.status();
    EXPECT_TRUE(answers[i].second->allowed);
    EXPECT_EQ(answers[i].second->remaining, 19u - i);
  }
  EXPECT_EQ(CommandCalls(*server_, "evalsha"), 2);
}

// Verifies a decision waiting behind a call that never gets its reply is
// still answered: the call times out (the connection is dropped) and the
// waiting decision fails fast with UNAVAILABLE instead of waiting on; the
// backend serves again once Redis does.
TEST_F(RedisBackendTest, DecisionWaitingBehindATimedOutCallIsAnswered) {
  auto backend = OneConnectionBackend(*server_, /*timeout_ms=*/300);
  ASSERT_TRUE(backend.ok()) << backend.status();
  ASSERT_TRUE(server_->Command({"CLIENT", "PAUSE", "1500", "WRITE"}).ok());
  const auto start = std::chrono::steady_clock::now();
  Recorder recorder(2);
  recorder.Decide(**backend, "late:{k}", Rate{5, 60'000}, 0);
  ASSERT_TRUE(WaitForBlockedClients(*server_, 1));
  recorder.Decide(**backend, "late:{k}", Rate{5, 60'000}, 1);
  const auto answers = recorder.Wait();
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(answers.size(), 2u);
  for (const auto& [index, answer] : answers) {
    EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable) << index;
  }
  EXPECT_LT(took, std::chrono::milliseconds(1200));
  EXPECT_TRUE(WaitUntilServing(**backend, std::chrono::seconds(6)));
}

// Verifies a crashed Redis fails decisions fast, and a restarted one is
// reconnected to without recreating the backend.
TEST_F(RedisBackendTest, ReconnectsAfterRestart) {
  server_->Kill();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    auto d = DecideSync(*backend_, "r:{1}", Rate{5, 60'000});
    EXPECT_EQ(d.status().code(), absl::StatusCode::kUnavailable);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_FALSE(backend_->connected());
  ASSERT_TRUE(server_->Restart().ok());
  EXPECT_TRUE(WaitUntilServing(*backend_, std::chrono::seconds(5)));
  EXPECT_TRUE(backend_->connected());
}

// Verifies nothing listening is a fast UNAVAILABLE naming the backend.
TEST(RedisBackendDownTest, NothingListening) {
  RedisOptions options;
  options.endpoints = {{"127.0.0.1", testing_redis::FreeLoopbackPort()}};
  auto backend = RedisBackend::Create(options);
  ASSERT_TRUE(backend.ok());
  const auto start = std::chrono::steady_clock::now();
  auto d = DecideSync(**backend, "x:{y}", Rate{1, 1000});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(options.Name()));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
}

// Verifies AUTH with the configured password, and a clear error with a wrong one.
TEST(RedisBackendAuthTest, Password) {
  RedisServer::Options server_options;
  server_options.requirepass = "s3cret";
  auto server = RedisServer::Start(server_options);
  ASSERT_TRUE(server.ok()) << server.status();
  RedisOptions good = OptionsFor(**server);
  good.password = "s3cret";
  auto backend = RedisBackend::Create(good);
  ASSERT_TRUE(backend.ok());
  EXPECT_TRUE(WaitUntilServing(**backend, std::chrono::seconds(5)));

  RedisOptions bad = OptionsFor(**server);
  bad.password = "wrong";
  auto denied = RedisBackend::Create(bad);
  ASSERT_TRUE(denied.ok());
  auto d = DecideSync(**denied, "a:{b}", Rate{1, 1000});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(d.status().message()), ::testing::Not(HasSubstr("wrong")));
}

// Verifies SELECT: buckets land in the configured database.
TEST_F(RedisBackendTest, SelectsDatabase) {
  RedisOptions options = OptionsFor(*server_);
  options.db = 3;
  auto backend = RedisBackend::Create(options);
  ASSERT_TRUE(backend.ok());
  ASSERT_TRUE(WaitUntilServing(**backend, std::chrono::seconds(5)));
  ASSERT_TRUE(DecideSync(**backend, "db:{k}", Rate{5, 60'000}).ok());
  EXPECT_EQ(*server_->Command({"EXISTS", "db:{k}"}), "0");
  EXPECT_EQ(*server_->Command(
                {"EVAL", "redis.call('SELECT', 3) return redis.call('EXISTS', KEYS[1])",
                 "1", "db:{k}"}),
            "1");
}

class RedisClusterBackendTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto cluster = RedisCluster::Start(3);
    ASSERT_TRUE(cluster.ok()) << cluster.status();
    cluster_ = cluster->release();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(cluster_, nullptr);
    auto options = ParseRedisUrl(cluster_->seeds_url());
    ASSERT_TRUE(options.ok()) << options.status();
    options->timeout_ms = 500;
    auto backend = RedisBackend::Create(*options);
    ASSERT_TRUE(backend.ok());
    backend_ = *std::move(backend);
    ASSERT_TRUE(WaitUntilServing(*backend_, std::chrono::seconds(10)));
  }

  static RedisCluster* cluster_;
  std::unique_ptr<RedisBackend> backend_;
};
RedisCluster* RedisClusterBackendTest::cluster_ = nullptr;

// Verifies our slot function agrees with Redis' own CLUSTER KEYSLOT.
TEST_F(RedisClusterBackendTest, KeySlotMatchesRedis) {
  for (const std::string key : {"a", "default:{api:user:1}", "x{}y", "{a}{b}",
                                "p:{u:\xff\x01}", "foo{bar}baz", "{", "}{"}) {
    auto slot = cluster_->node(0).Command({"CLUSTER", "KEYSLOT", key});
    ASSERT_TRUE(slot.ok()) << slot.status();
    EXPECT_EQ(absl::StrCat(RedisKeySlot(key)), *slot) << key;
  }
}

// Verifies buckets spread over all three nodes and each key is exact.
TEST_F(RedisClusterBackendTest, SpreadsOverNodes) {
  const Rate rate{2, 3'600'000};
  for (int i = 0; i < 300; ++i) {
    const std::string key = absl::StrCat("spread:{api:user:", i, "}");
    auto d = DecideSync(*backend_, key, rate);
    ASSERT_TRUE(d.ok()) << d.status();
    EXPECT_EQ(d->remaining, 1u);
  }
  auto per_node = cluster_->KeysPerNode();
  ASSERT_TRUE(per_node.ok());
  for (int64_t n : *per_node) EXPECT_GT(n, 0);
}

// Verifies a batch whose keys live on different nodes answers in order.
TEST_F(RedisClusterBackendTest, BatchAcrossNodes) {
  const Rate rate{1, 3'600'000};
  std::vector<BucketOp> ops;
  for (int i = 0; i < 30; ++i)
    ops.push_back({absl::StrCat("cb:{", i % 10, "}"), rate, 1});
  auto out = BatchSync(*backend_, ops);
  ASSERT_TRUE(out.ok()) << out.status();
  for (int i = 0; i < 30; ++i) EXPECT_EQ((*out)[i].allowed, i < 10) << i;
}

// Verifies a batch on a cluster is coalesced per hash slot (Redis Cluster
// refuses scripts across slots): one EVALSHA per distinct slot over all
// nodes, answers in order.
TEST_F(RedisClusterBackendTest, CoalescesPerSlot) {
  for (int n = 0; n < cluster_->size(); ++n) {
    LoadScriptsAndResetStats(cluster_->node(n));
    if (HasFatalFailure()) return;
  }
  const Rate rate{2, 3'600'000};
  std::vector<BucketOp> ops;
  std::set<int> slots;
  for (int i = 0; i < 40; ++i) {
    ops.push_back({absl::StrCat("cs:{", i % 8, "}"), rate, 1});
    slots.insert(RedisKeySlot(ops.back().key));
  }
  auto out = BatchSync(*backend_, ops);
  ASSERT_TRUE(out.ok()) << out.status();
  for (int i = 0; i < 40; ++i) EXPECT_EQ((*out)[i].allowed, i < 16) << i;
  int64_t calls = 0;
  std::set<int> nodes;
  for (int n = 0; n < cluster_->size(); ++n) {
    const int64_t c = CommandCalls(cluster_->node(n), "evalsha");
    calls += c;
    if (c > 0) nodes.insert(n);
  }
  EXPECT_EQ(calls, static_cast<int64_t>(slots.size()));
  EXPECT_GT(nodes.size(), 1u);
}

// Verifies decisions held while a cluster node is busy leave grouped by hash
// slot (Redis Cluster refuses a script across slots): one connection, the
// node holding the first decision's call, ten more decisions alternating
// between two keys of two slots on that node travel as two coalesced calls —
// three calls on the node in all — and each key's answers stay exact, in
// order.
TEST_F(RedisClusterBackendTest, HeldDecisionsLeaveGroupedBySlot) {
  std::string keys[2];
  int node = -1;
  for (int i = 0; i < 200 && keys[1].empty(); ++i) {
    const std::string key = absl::StrCat("hs:{", i, "}");
    auto owner = cluster_->NodeForKey(key);
    ASSERT_TRUE(owner.ok()) << owner.status();
    if (keys[0].empty()) {
      keys[0] = key;
      node = *owner;
    } else if (*owner == node && RedisKeySlot(key) != RedisKeySlot(keys[0])) {
      keys[1] = key;
    }
  }
  ASSERT_FALSE(keys[1].empty());
  const Rate rate{20, 3'600'000};
  auto options = ParseRedisUrl(cluster_->seeds_url());
  ASSERT_TRUE(options.ok()) << options.status();
  options->timeout_ms = 5000;
  options->pool_size = 1;
  auto backend = RedisBackend::Create(*options);
  ASSERT_TRUE(backend.ok()) << backend.status();
  ASSERT_TRUE(WaitUntilServing(**backend, std::chrono::seconds(10)));
  // The connection to that node is up and both slots are mapped to it (a
  // key of each slot; a first call may learn the owner from MOVED).
  for (const std::string& key : keys) {
    ASSERT_TRUE(DecideSync(**backend, absl::StrCat("warm:", key), rate).ok());
  }
  const RedisServer& server = cluster_->node(node);
  LoadScriptsAndResetStats(server);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(server.Command({"CLIENT", "PAUSE", "10000", "WRITE"}).ok());
  Recorder recorder(11);
  recorder.Decide(**backend, keys[0], rate, 0);
  const bool held_by_redis = WaitForBlockedClients(server, 1);
  for (int i = 1; i <= 10; ++i) {
    recorder.Decide(**backend, keys[i % 2], rate, i);
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  ASSERT_TRUE(server.Command({"CLIENT", "UNPAUSE"}).ok());
  ASSERT_TRUE(held_by_redis);
  auto answers = recorder.Wait();
  ASSERT_EQ(answers.size(), 11u);
  std::sort(answers.begin(), answers.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  int taken[2] = {0, 0};
  for (const auto& [index, answer] : answers) {
    ASSERT_TRUE(answer.ok()) << index << ": " << answer.status();
    const int k = index == 0 ? 0 : index % 2;
    ++taken[k];
    EXPECT_EQ(answer->remaining, 20u - taken[k]) << index;
  }
  EXPECT_EQ(CommandCalls(server, "evalsha"), 3);
}

// Verifies all-or-nothing batches on a cluster: the keys of one identifier
// share a slot (whichever node owns it) and are decided together; keys of
// different identifiers fail at once with FAILED_PRECONDITION, taking nothing.
TEST_F(RedisClusterBackendTest, AllOrNothingOneIdentifier) {
  const Rate burst{1, 3'600'000};
  const Rate sustained{10, 3'600'000};
  std::set<int> nodes;
  for (int i = 0; i < 12; ++i) {
    const std::string id = absl::StrCat("aon-user:", i);
    const std::vector<BucketOp> ops = {
        {absl::StrCat("p:burst:{", id, "}"), burst, 1},
        {absl::StrCat("q:sustained:{", id, "}"), sustained, 1}};
    auto owner = cluster_->NodeForKey(ops[0].key);
    ASSERT_TRUE(owner.ok()) << owner.status();
    nodes.insert(*owner);
    auto first = AllOrNothingSync(*backend_, ops);
    ASSERT_TRUE(first.ok()) << id << ": " << first.status();
    EXPECT_TRUE(first->applied);
    EXPECT_EQ(first->decisions[1].remaining, 9u);
    auto second = AllOrNothingSync(*backend_, ops);
    ASSERT_TRUE(second.ok()) << id << ": " << second.status();
    EXPECT_FALSE(second->applied);
    EXPECT_EQ(second->decisions[1].remaining, 9u);
    EXPECT_EQ(cluster_->node(*owner).Command({"EXISTS", ops[1].key}).value_or("?"), "1");
  }
  EXPECT_GT(nodes.size(), 1u);  // several nodes were exercised

  // Find two identifiers in different slots.
  const std::string a = "p:burst:{aon-a}";
  const std::string b = "p:burst:{aon-b}";
  ASSERT_NE(RedisKeySlot(a), RedisKeySlot(b));
  auto split = AllOrNothingSync(*backend_, {{a, sustained, 1}, {b, sustained, 1}});
  EXPECT_EQ(split.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(split.status().message()), HasSubstr("one hash slot"));
  EXPECT_EQ(cluster_->node(*cluster_->NodeForKey(a)).Command({"EXISTS", a}).value_or("?"),
            "0");
}

// Verifies a bucket keeps its state across a slot migration (MOVED/ASK
// followed, slot map refreshed).
TEST_F(RedisClusterBackendTest, StateSurvivesSlotMigration) {
  const Rate rate{5, 3'600'000};
  const std::string key = "mig:{api:user:42}";
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(DecideSync(*backend_, key, rate)->allowed);
  auto owner = cluster_->NodeForKey(key);
  ASSERT_TRUE(owner.ok());
  const int target = (*owner + 1) % cluster_->size();
  ASSERT_TRUE(cluster_->MigrateSlot(RedisKeySlot(key), *owner, target).ok());
  auto d = DecideSync(*backend_, key, rate);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->allowed);
  EXPECT_EQ(d->remaining, 0u);
  EXPECT_EQ(*cluster_->NodeForKey(key), target);
  auto again = DecideSync(*backend_, key, rate);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE(again->allowed);
  // The other keys still work after the topology change.
  EXPECT_TRUE(DecideSync(*backend_, "mig:{other}", rate)->allowed);
}

// Verifies a key whose slot is mid-migration (source answers ASK) is decided
// on the importing node with ASKING, keeping its state.
TEST_F(RedisClusterBackendTest, FollowsAskDuringMigration) {
  const Rate rate{3, 3'600'000};
  const std::string key = "ask:{api:user:7}";
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(DecideSync(*backend_, key, rate)->allowed);
  const int slot = RedisKeySlot(key);
  auto from = cluster_->NodeForKey(key);
  ASSERT_TRUE(from.ok());
  const int to = (*from + 1) % cluster_->size();
  const std::string slot_text = absl::StrCat(slot);
  ASSERT_TRUE(cluster_->node(to)
                  .Command({"CLUSTER", "SETSLOT", slot_text, "IMPORTING",
                            cluster_->node_id(*from)})
                  .ok());
  ASSERT_TRUE(
      cluster_->node(*from)
          .Command({"CLUSTER", "SETSLOT", slot_text, "MIGRATING", cluster_->node_id(to)})
          .ok());
  // Move every key of the slot (earlier tests may have left some there).
  auto keys =
      cluster_->node(*from).Command({"CLUSTER", "GETKEYSINSLOT", slot_text, "1000"});
  ASSERT_TRUE(keys.ok()) << keys.status();
  std::vector<std::string> migrate = {
      "MIGRATE", "127.0.0.1", absl::StrCat(cluster_->node(to).port()), "", "0",
      "5000",    "KEYS"};
  for (absl::string_view k : absl::StrSplit(*keys, '\n', absl::SkipEmpty())) {
    migrate.emplace_back(k);
  }
  auto migrated = cluster_->node(*from).Command(migrate);
  ASSERT_TRUE(migrated.ok()) << migrated.status();
  // The source no longer has the key and answers ASK; the backend must follow.
  auto d = DecideSync(*backend_, key, rate);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->allowed);
  EXPECT_EQ(d->remaining, 0u);
  // A coalesced call into the migrating slot (ASK for the call as a whole)
  // goes again item by item, each following ASK on its own.
  const std::string fresh = "ask2:{api:user:7}";
  auto batch = BatchSync(*backend_, {{key, rate, 1}, {fresh, rate, 1}, {fresh, rate, 1}});
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_FALSE((*batch)[0].allowed);
  EXPECT_EQ((*batch)[1].remaining, 2u);
  EXPECT_EQ((*batch)[2].remaining, 1u);
  // Finish the migration: the importing node first, then the source, then the rest.
  for (int i : {to, *from, 3 - to - *from}) {
    auto done = cluster_->node(i).Command(
        {"CLUSTER", "SETSLOT", slot_text, "NODE", cluster_->node_id(to)});
    ASSERT_TRUE(done.ok()) << "node " << i << ": " << done.status();
  }
  auto after = DecideSync(*backend_, key, rate);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_FALSE(after->allowed);
}

// Verifies two cluster backends in one process refresh their slot maps
// concurrently and independently (each has its own rotation over its nodes):
// their I/O threads used to share one static rotation counter, a data race
// that ThreadSanitizer reports (the TSan job runs this test). Connections are
// killed repeatedly so both backends reconnect and re-read CLUSTER SLOTS
// while serving; afterwards both answer every key on every node exactly.
TEST_F(RedisClusterBackendTest, TwoBackendsRefreshSlotsConcurrently) {
  auto options = ParseRedisUrl(cluster_->seeds_url());
  ASSERT_TRUE(options.ok()) << options.status();
  options->timeout_ms = 500;
  auto second = RedisBackend::Create(*options);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(WaitUntilServing(**second, std::chrono::seconds(10)));

  std::atomic<bool> stop{false};
  std::vector<std::thread> callers;
  for (Backend* backend :
       {static_cast<Backend*>(backend_.get()), static_cast<Backend*>(second->get())}) {
    callers.emplace_back([backend, &stop] {
      for (int i = 0; !stop.load(); ++i) {
        // Errors are expected while connections are being killed.
        (void)DecideSync(*backend, absl::StrCat("refresh:{", i % 50, "}"),
                         Rate{1'000'000, 1000});
      }
    });
  }
  for (int round = 0; round < 6; ++round) {
    for (int n = 0; n < cluster_->size(); ++n) {
      // Every client connection but the harness' own: both backends
      // reconnect, and a cluster backend re-reads CLUSTER SLOTS after that.
      (void)cluster_->node(n).Command({"CLIENT", "KILL", "TYPE", "normal"});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
  }
  stop = true;
  for (auto& t : callers) t.join();

  ASSERT_TRUE(WaitUntilServing(*backend_, std::chrono::seconds(10)));
  ASSERT_TRUE(WaitUntilServing(**second, std::chrono::seconds(10)));
  const Rate rate{2, 3'600'000};
  for (int i = 0; i < 60; ++i) {
    const std::string key = absl::StrCat("refreshed:{", i, "}");
    auto first_hit = DecideSync(*backend_, key, rate);
    ASSERT_TRUE(first_hit.ok()) << first_hit.status();
    EXPECT_EQ(first_hit->remaining, 1u) << key;
    auto second_hit = DecideSync(**second, key, rate);
    ASSERT_TRUE(second_hit.ok()) << second_hit.status();
    EXPECT_EQ(second_hit->remaining, 0u) << key;
  }
}

}  // namespace
}  // namespace traffik
