// The Redis backend's admin operations against real redis-server processes
// (and a 3-node Redis Cluster) started by the harness: the peek flag of the
// bucket scripts (checked against the C++ bucket), Backend::Peek, peeks in
// batches, and Backend::Reset (SCAN + UNLINK) with keys holding glob
// characters, several SCAN pages and cluster nodes.

#include <future>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "backend/redis/bucket_script.h"
#include "backend/redis/key_scan.h"
#include "backend/redis/redis_backend.h"
#include "bucket/token_bucket.h"
#include "engine/key.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "redis/backend_sync.h"
#include "redis/redis_harness.h"

namespace traffik {
namespace {

using testing_redis::AllOrNothingSync;
using testing_redis::BatchSync;
using testing_redis::DecideSync;
using testing_redis::RedisCluster;
using testing_redis::RedisServer;

constexpr uint64_t kHourMs = 3'600'000;

absl::StatusOr<PeekResult> PeekSync(Backend& backend, const std::string& key,
                                    const Rate& rate, uint64_t cost = 1) {
  std::promise<absl::StatusOr<PeekResult>> promise;
  backend.Peek(nullptr, key, rate, cost,
               [&promise](absl::StatusOr<PeekResult> p) { promise.set_value(p); });
  return promise.get_future().get();
}

// Resets as the engine does: the selector of (prefix, uid, identifier).
absl::StatusOr<uint64_t> ResetSync(Backend& backend, const std::string& prefix,
                                   const std::string& uid = "",
                                   const std::string& identifier = "") {
  BucketSelector selector;
  selector.key_prefix = BucketKeyPrefix(prefix, uid, identifier);
  selector.matches = [=](absl::string_view key) {
    return BucketKeyMatches(key, prefix, uid, identifier);
  };
  std::promise<absl::StatusOr<uint64_t>> promise;
  backend.Reset(nullptr, std::move(selector),
                [&promise](absl::StatusOr<uint64_t> n) { promise.set_value(n); });
  return promise.get_future().get();
}

bool WaitUntilServing(Backend& backend, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (DecideSync(backend, "probe:{x}", Rate{1000, 1000}).ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string Key(const std::string& prefix, const std::string& uid,
                const std::string& identifier) {
  std::string key;
  BuildBucketKey(prefix, uid, identifier, &key);
  return key;
}

std::string InlineKey(const std::string& prefix, const std::string& uid,
                      const std::string& identifier, uint64_t limit) {
  std::string key;
  BuildInlineBucketKey(prefix, uid, identifier, limit, kHourMs, &key);
  return key;
}

class RedisAdminTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = RedisServer::Start();
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    auto options = ParseRedisUrl(server_->url());
    ASSERT_TRUE(options.ok());
    auto backend = RedisBackend::Create(*options);
    ASSERT_TRUE(backend.ok()) << backend.status();
    backend_ = *std::move(backend);
    ASSERT_TRUE(WaitUntilServing(*backend_, std::chrono::seconds(5)));
    ASSERT_TRUE(server_->Command({"DEL", "probe:{x}"}).ok());
  }

  int64_t DbSize() {
    auto n = server_->Command({"DBSIZE"});
    int64_t v = -1;
    EXPECT_TRUE(n.ok() && absl::SimpleAtoi(*n, &v));
    return v;
  }

  std::unique_ptr<RedisServer> server_;
  std::unique_ptr<RedisBackend> backend_;
};

// Verifies the bucket script's peek flag gives bit-identical answers to the
// C++ bucket (the hit's decision, then the bucket as it stands) and writes
// nothing, over random sequences of hits and peeks, rates and clock steps;
// and the all-or-nothing script's dry run answers as the model and writes
// nothing.
TEST_F(RedisAdminTest, PeekScriptsMatchCppBucket) {
  const std::string& script = RedisBucketScriptWithExplicitNowForTesting();
  std::mt19937_64 rng(5);
  const std::vector<Rate> rates = {{1, 1},
                                   {3, 1000},
                                   {10, 60'000},
                                   {1000, 7},
                                   {(uint64_t{1} << 53) / 999'983, 999'983}};
  int peeks = 0;
  for (size_t r = 0; r < rates.size(); ++r) {
    const Rate rate = rates[r];
    const std::string key = absl::StrCat("peq:{", r, "}");
    std::optional<BucketState> state;
    int64_t now = 1'700'000'000'000;
    for (int step = 0; step < 80; ++step) {
      const uint64_t cost = 1 + rng() % std::min<uint64_t>(rate.capacity, 5);
      now += static_cast<int64_t>(rng() % (rate.period_ms / 3 + 2));
      if (step % 13 == 4) now -= 2;  // a clock step backwards
      const bool peek = rng() % 2 == 0;
      std::vector<std::string> args = {"EVAL",
                                       script,
                                       "1",
                                       key,
                                       absl::StrCat(rate.capacity),
                                       absl::StrCat(rate.period_ms),
                                       absl::StrCat(cost),
                                       absl::StrCat(now)};
      if (peek) args.push_back("peek");
      const std::string before = *server_->Command({"GET", key});
      auto got = server_->Command(args);
      ASSERT_TRUE(got.ok()) << got.status();
      BucketState next;
      const Decision want = Decide(state ? &*state : nullptr, rate, cost, now, &next);
      if (peek) {
        BucketState unused;
        const Decision as_is = Decide(state ? &*state : nullptr, rate, 0, now, &unused);
        EXPECT_EQ(*got, absl::StrCat(want.allowed ? 1 : 0, "\n", want.wait_ms, "\n",
                                     want.remaining, "\n", want.reset_ms, "\n",
                                     as_is.remaining, "\n", as_is.reset_ms))
            << "peek, rate " << r << " step " << step;
        EXPECT_EQ(*server_->Command({"GET", key}), before) << "a peek wrote";
        ++peeks;
      } else {
        ASSERT_EQ(*got, absl::StrCat(want.allowed ? 1 : 0, "\n", want.wait_ms, "\n",
                                     want.remaining, "\n", want.reset_ms))
            << "decide, rate " << r << " step " << step;
        state = next;
        if (want.reset_ms == 0) state.reset();  // the script deletes a full bucket
      }
    }
  }
  EXPECT_GT(peeks, 100);

  // The all-or-nothing dry run: the answer of the real batch, nothing written.
  const std::string& batch = RedisAllOrNothingScriptWithExplicitNowForTesting();
  const std::string a = "dry:a:{id}";
  const std::string b = "dry:b:{id}";
  const int64_t now = 1'700'000'000'000;
  ASSERT_TRUE(server_->Command({"EVAL", batch, "1", a, "3", "1000", "2", "1"}).ok());
  const std::string stored = *server_->Command({"GET", a});
  for (const char* cost_b : {"1", "3"}) {
    std::vector<std::string> args = {"EVAL", batch,  "2",    a,
                                     b,      "3",    "1000", "1",
                                     "3",    "1000", cost_b, absl::StrCat(now)};
    std::vector<std::string> dry = args;
    dry.push_back("peek");
    auto dry_answer = server_->Command(dry);
    ASSERT_TRUE(dry_answer.ok()) << dry_answer.status();
    EXPECT_EQ(*server_->Command({"GET", a}), stored);
    EXPECT_EQ(*server_->Command({"EXISTS", b}), "0");
    auto real = server_->Command(args);
    ASSERT_TRUE(real.ok());
    EXPECT_EQ(*dry_answer, *real) << "cost_b " << cost_b;
    ASSERT_TRUE(server_->Command({"SET", a, stored}).ok());
    ASSERT_TRUE(server_->Command({"DEL", b}).ok());
  }
}

// Verifies Backend::Peek takes nothing and creates no key: 100 peeks leave
// the bucket's remaining unchanged, a peek on a missing bucket creates none,
// and a drained bucket reports its wait.
TEST_F(RedisAdminTest, PeekTakesNothing) {
  const Rate rate{3, kHourMs};
  ASSERT_TRUE(DecideSync(*backend_, "p:u:{a}", rate)->allowed);
  for (int i = 0; i < 100; ++i) {
    auto p = PeekSync(*backend_, "p:u:{a}", rate);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_TRUE(p->hit.allowed);
    EXPECT_EQ(p->hit.remaining, 1u);
    EXPECT_EQ(p->as_is.remaining, 2u);
    EXPECT_EQ(p->as_is.limit, 3u);
    ASSERT_TRUE(PeekSync(*backend_, "p:u:{missing}", rate).ok());
  }
  EXPECT_EQ(DbSize(), 1);
  EXPECT_EQ(DecideSync(*backend_, "p:u:{a}", rate)->remaining, 1u);
  ASSERT_TRUE(DecideSync(*backend_, "p:u:{a}", rate)->allowed);
  auto drained = PeekSync(*backend_, "p:u:{a}", rate);
  ASSERT_TRUE(drained.ok());
  EXPECT_FALSE(drained->hit.allowed);
  EXPECT_GT(drained->hit.wait_ms, 1'199'000u);
  EXPECT_EQ(drained->as_is.remaining, 0u);
}

// Verifies peeks in a batch see what earlier items took and take nothing,
// and an all-or-nothing batch of peeks is a dry run.
TEST_F(RedisAdminTest, PeekInBatches) {
  const Rate rate{3, kHourMs};
  BucketOp take{"b:u:{x}", rate, 1};
  BucketOp look{"b:u:{x}", rate, 1};
  look.peek = true;
  auto r = BatchSync(*backend_, {take, look, take, look});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].remaining, 2u);
  EXPECT_EQ((*r)[1].remaining, 1u);
  EXPECT_EQ((*r)[2].remaining, 1u);
  EXPECT_EQ((*r)[3].remaining, 0u);
  BucketOp look2 = look;
  look2.cost = 2;
  auto dry = AllOrNothingSync(*backend_, {look, look2});
  ASSERT_TRUE(dry.ok()) << dry.status();
  EXPECT_FALSE(dry->applied);  // 1 left: 1 + 2 would not fit
  auto dry_ok = AllOrNothingSync(*backend_, {look});
  ASSERT_TRUE(dry_ok.ok());
  EXPECT_TRUE(dry_ok->applied);
  EXPECT_EQ(dry_ok->decisions[0].remaining, 0u);
  EXPECT_EQ(PeekSync(*backend_, "b:u:{x}", rate)->as_is.remaining, 1u);
}

// Verifies Reset with prefixes, uids and identifiers holding every glob
// character (* ? [ ] \) removes exactly the selected buckets: a glob-looking
// prefix or identifier never widens the match to others, inline-spec buckets
// of the uid go too, other tenants' keys (also a longer prefix that starts
// alike) and keys that are no buckets stay.
TEST_F(RedisAdminTest, ResetWithGlobCharacters) {
  const Rate rate{5, kHourMs};
  const std::string glob = "t*[?]\\";
  const std::vector<std::string> identifiers = {"*", "a?", "[ab]", "\\", "x", "*}#5/9"};
  for (const std::string& id : identifiers) {
    ASSERT_TRUE(DecideSync(*backend_, Key(glob, "u", id), rate).ok());
    ASSERT_TRUE(DecideSync(*backend_, InlineKey(glob, "u", id, 5), rate).ok());
    ASSERT_TRUE(DecideSync(*backend_, Key(glob, "v", id), rate).ok());
    ASSERT_TRUE(DecideSync(*backend_, Key("tx[?]\\", "u", id), rate)
                    .ok());  // matched by the glob
    ASSERT_TRUE(DecideSync(*backend_, Key(glob + ":u", "w", id), rate).ok());
  }
  ASSERT_TRUE(server_->Command({"SET", glob + ":not a bucket", "1"}).ok());
  const int64_t total = DbSize();
  ASSERT_EQ(total, 5 * 6 + 1);

  // One identifier: the literal '*', not every identifier.
  auto one = ResetSync(*backend_, glob, "u", "*");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, 2u);  // configured + inline
  EXPECT_EQ(*server_->Command({"EXISTS", Key(glob, "u", "a?")}), "1");
  EXPECT_EQ(*server_->Command({"EXISTS", Key(glob, "u", "*}#5/9")}), "1");
  // "*}#5/9" starts like "*}" + "#5/9" but is its own identifier.
  EXPECT_EQ(*ResetSync(*backend_, glob, "u", "[ab]"), 2u);
  EXPECT_EQ(*server_->Command({"EXISTS", Key(glob, "u", "a?")}), "1");
  // One uid: every identifier, configured and inline.
  EXPECT_EQ(*ResetSync(*backend_, glob, "u"), 8u);
  EXPECT_EQ(*server_->Command({"EXISTS", Key(glob, "v", "a?")}), "1");
  // The tenant: its remaining uid only.
  EXPECT_EQ(*ResetSync(*backend_, glob), 6u);
  EXPECT_EQ(DbSize(), total - 18);
  EXPECT_EQ(*server_->Command({"EXISTS", Key("tx[?]\\", "u", "x")}), "1");
  EXPECT_EQ(*server_->Command({"EXISTS", Key(glob + ":u", "w", "x")}), "1");
  EXPECT_EQ(*server_->Command({"EXISTS", glob + ":not a bucket"}), "1");
  EXPECT_EQ(*ResetSync(*backend_, glob), 0u);
}

// Verifies Reset walks several SCAN pages and UNLINK batches: 2600 buckets of
// a tenant among 600 of another, all of the first removed and counted.
TEST_F(RedisAdminTest, ResetManyKeys) {
  const Rate rate{5, kHourMs};
  for (int i = 0; i < 2600; ++i) {
    ASSERT_TRUE(DecideSync(*backend_, Key("big", "u", absl::StrCat(i)), rate).ok());
  }
  for (int i = 0; i < 600; ++i) {
    ASSERT_TRUE(DecideSync(*backend_, Key("other", "u", absl::StrCat(i)), rate).ok());
  }
  auto removed = ResetSync(*backend_, "big");
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 2600u);
  EXPECT_EQ(DbSize(), 600);
}

// Verifies Reset on an unreachable Redis fails UNAVAILABLE, naming the backend.
TEST_F(RedisAdminTest, ResetWhenDown) {
  server_->Kill();
  auto removed = ResetSync(*backend_, "p");
  EXPECT_EQ(removed.status().code(), absl::StatusCode::kUnavailable) << removed.status();
  auto peek = PeekSync(*backend_, "p:u:{a}", Rate{1, 1000});
  EXPECT_EQ(peek.status().code(), absl::StatusCode::kUnavailable);
}

class RedisClusterAdminTest : public ::testing::Test {
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
    options->timeout_ms = 1000;
    auto backend = RedisBackend::Create(*options);
    ASSERT_TRUE(backend.ok());
    backend_ = *std::move(backend);
    ASSERT_TRUE(WaitUntilServing(*backend_, std::chrono::seconds(10)));
  }

  int64_t TotalKeys() {
    auto per_node = cluster_->KeysPerNode();
    EXPECT_TRUE(per_node.ok());
    int64_t total = 0;
    for (int64_t n : *per_node) total += n;
    return total;
  }

  static RedisCluster* cluster_;
  std::unique_ptr<RedisBackend> backend_;
};
RedisCluster* RedisClusterAdminTest::cluster_ = nullptr;

// Verifies Reset on Redis Cluster scans every master: a tenant's buckets
// spread over all three nodes (glob characters in the prefix) are all
// removed, by identifier, by uid and for the tenant; another tenant's stay.
TEST_F(RedisClusterAdminTest, ResetScansEveryMaster) {
  const Rate rate{5, kHourMs};
  const std::string prefix = "c[l]*";
  const int64_t before = TotalKeys();
  for (int i = 0; i < 300; ++i) {
    const std::string id = absl::StrCat("user:", i);
    ASSERT_TRUE(DecideSync(*backend_, Key(prefix, "u", id), rate).ok());
    ASSERT_TRUE(DecideSync(*backend_, InlineKey(prefix, "u", id, 7), rate).ok());
    ASSERT_TRUE(DecideSync(*backend_, Key(prefix, "v", id), rate).ok());
    ASSERT_TRUE(DecideSync(*backend_, Key("keep", "u", id), rate).ok());
  }
  auto per_node = cluster_->KeysPerNode();
  ASSERT_TRUE(per_node.ok());
  for (int64_t n : *per_node) EXPECT_GT(n, 100);

  auto one = ResetSync(*backend_, prefix, "u", "user:7");
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(*one, 2u);
  EXPECT_EQ(*ResetSync(*backend_, prefix, "u"), 598u);
  EXPECT_EQ(*ResetSync(*backend_, prefix), 300u);
  EXPECT_EQ(*ResetSync(*backend_, "keep"), 300u);
  // Nothing of either tenant is left on any node. (Counts of other keys are
  // not compared: the shared cluster may hold keys of earlier tests that
  // expire meanwhile.)
  EXPECT_EQ(*ResetSync(*backend_, prefix), 0u);
  EXPECT_EQ(*ResetSync(*backend_, "keep"), 0u);
  EXPECT_LE(TotalKeys(), before);
}

// Verifies Peek on Redis Cluster routes by the key's slot and takes nothing.
TEST_F(RedisClusterAdminTest, PeekRoutes) {
  const Rate rate{2, kHourMs};
  for (int i = 0; i < 30; ++i) {
    const std::string key = Key("cp", "u", absl::StrCat(i));
    ASSERT_TRUE(DecideSync(*backend_, key, rate).ok());
    auto p = PeekSync(*backend_, key, rate);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_EQ(p->as_is.remaining, 1u);
    EXPECT_EQ(DecideSync(*backend_, key, rate)->remaining, 0u);
  }
  EXPECT_EQ(*ResetSync(*backend_, "cp"), 30u);
}

// Verifies RedisGlobEscape escapes exactly the glob characters.
TEST(RedisGlobEscapeTest, EscapesGlobCharacters) {
  EXPECT_EQ(RedisGlobEscape("plain:{id}"), "plain:{id}");
  EXPECT_EQ(RedisGlobEscape("*?[]\\"), "\\*\\?\\[\\]\\\\");
  EXPECT_EQ(RedisGlobEscape(std::string("a\0*", 3)), std::string("a\0\\*", 4));
}

}  // namespace
}  // namespace traffik
