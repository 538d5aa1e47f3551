#include "backend/memory/memory_backend.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "clock/clock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

class MemoryBackendTest : public ::testing::Test {
 protected:
  MemoryBackendOptions Options(uint64_t max_buckets = 1'000'000) {
    MemoryBackendOptions o;
    o.max_buckets = max_buckets;
    o.sweep_interval_ms = 0;  // tests sweep by hand
    return o;
  }
  FakeClock clock_;
};

// Verifies each key is an independent bucket.
TEST_F(MemoryBackendTest, KeysAreIndependent) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{2, 60'000};
  EXPECT_TRUE(backend.DecideNow("a", rate, 1).allowed);
  EXPECT_TRUE(backend.DecideNow("a", rate, 1).allowed);
  EXPECT_FALSE(backend.DecideNow("a", rate, 1).allowed);
  EXPECT_TRUE(backend.DecideNow("b", rate, 1).allowed);
  EXPECT_EQ(backend.bucket_count(), 2u);
}

// Verifies keys are binary-safe: embedded NULs and high bytes are distinct keys.
TEST_F(MemoryBackendTest, BinarySafeKeys) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{1, 60'000};
  const std::string a("x\0a", 3), b("x\0b", 3), c("x\xff", 2);
  EXPECT_TRUE(backend.DecideNow(a, rate, 1).allowed);
  EXPECT_TRUE(backend.DecideNow(b, rate, 1).allowed);
  EXPECT_TRUE(backend.DecideNow(c, rate, 1).allowed);
  EXPECT_FALSE(backend.DecideNow(a, rate, 1).allowed);
}

// Verifies the backend follows the injected clock for refill.
TEST_F(MemoryBackendTest, RefillFollowsClock) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{1, 1000};
  ASSERT_TRUE(backend.DecideNow("k", rate, 1).allowed);
  const Decision refused = backend.DecideNow("k", rate, 1);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.wait_ms, 1000u);
  clock_.AdvanceMs(999);
  EXPECT_FALSE(backend.DecideNow("k", rate, 1).allowed);
  clock_.AdvanceMs(1);
  EXPECT_TRUE(backend.DecideNow("k", rate, 1).allowed);
}

// Verifies the asynchronous interface completes inline with the same answer.
TEST_F(MemoryBackendTest, AsyncDecideCompletesInline) {
  MemoryBackend backend(clock_, Options());
  bool called = false;
  backend.Decide("k", Rate{3, 1000}, 2, [&](absl::StatusOr<Decision> d) {
    called = true;
    ASSERT_TRUE(d.ok());
    EXPECT_TRUE(d->allowed);
    EXPECT_EQ(d->remaining, 1u);
  });
  EXPECT_TRUE(called);
}

// Verifies a batch applies hits in order, as if made one by one.
TEST_F(MemoryBackendTest, BatchInOrder) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{2, 60'000};
  std::vector<BucketOp> ops = {
      {"k", rate, 1}, {"k", rate, 1}, {"k", rate, 1}, {"j", rate, 2}};
  std::vector<Decision> out;
  backend.DecideBatch(ops, [&](absl::StatusOr<std::vector<Decision>> r) {
    ASSERT_TRUE(r.ok());
    out = *r;
  });
  ASSERT_EQ(out.size(), 4u);
  EXPECT_TRUE(out[0].allowed);
  EXPECT_EQ(out[0].remaining, 1u);
  EXPECT_TRUE(out[1].allowed);
  EXPECT_FALSE(out[2].allowed);
  EXPECT_TRUE(out[3].allowed);
  EXPECT_EQ(out[3].remaining, 0u);
}

// Verifies buckets that refilled to full are dropped by a sweep, and a dropped
// bucket behaves exactly like the one it replaced (no loss).
TEST_F(MemoryBackendTest, SweepDropsFullBuckets) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{10, 1000};
  backend.DecideNow("short", rate, 1);              // full again after 100 ms
  backend.DecideNow("long", Rate{10, 100'000}, 1);  // after 10 s
  EXPECT_EQ(backend.bucket_count(), 2u);
  clock_.AdvanceMs(99);
  EXPECT_EQ(backend.SweepExpired(), 0u);
  clock_.AdvanceMs(1);
  EXPECT_EQ(backend.SweepExpired(), 1u);
  EXPECT_EQ(backend.bucket_count(), 1u);
  const Decision d = backend.DecideNow("short", rate, 1);
  EXPECT_EQ(d.remaining, 9u);
  EXPECT_EQ(backend.evictions(), 0u);
}

// Verifies max_buckets bounds memory: full buckets go first at no loss, then
// the buckets closest to full are evicted and counted.
TEST_F(MemoryBackendTest, MaxBucketsEvicts) {
  const uint64_t cap = MemoryBackend::kShards * 4;
  MemoryBackend backend(clock_, Options(cap));
  const Rate rate{100, 100'000};
  for (int i = 0; i < 5000; ++i) backend.DecideNow(absl::StrCat("key-", i), rate, 1);
  EXPECT_LE(backend.bucket_count(), cap);
  EXPECT_GT(backend.evictions(), 0u);
  EXPECT_EQ(backend.evictions(), 5000 - backend.bucket_count());
}

// Verifies that at the cap, buckets that are full again are dropped instead of
// evicting live state.
TEST_F(MemoryBackendTest, MaxBucketsPrefersFullBuckets) {
  const uint64_t cap = MemoryBackend::kShards;  // one per shard
  MemoryBackend backend(clock_, Options(cap));
  const Rate rate{10, 1000};
  for (int i = 0; i < 2000; ++i) {
    backend.DecideNow(absl::StrCat("key-", i), rate, 1);
    clock_.AdvanceMs(100);  // every earlier bucket is full again
  }
  EXPECT_EQ(backend.evictions(), 0u);
  EXPECT_LE(backend.bucket_count(), cap);
}

// Verifies exact concurrency: many threads on one key, exactly `limit` allowed.
TEST_F(MemoryBackendTest, ExactUnderConcurrency) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{1000, 3'600'000};
  constexpr int kThreads = 8;
  constexpr int kHitsPerThread = 500;
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kHitsPerThread; ++i) {
        if (backend.DecideNow("hot", rate, 1).allowed) allowed.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(allowed.load(), 1000);
}

// Verifies exact concurrency across many keys sharing shards.
TEST_F(MemoryBackendTest, ExactUnderConcurrencyManyKeys) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{7, 3'600'000};
  constexpr int kThreads = 6;
  constexpr int kKeys = 300;
  std::vector<std::atomic<int>> allowed(kKeys);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int round = 0; round < 3; ++round) {
        for (int k = 0; k < kKeys; ++k) {
          if (backend.DecideNow(absl::StrCat("k", k), rate, 1).allowed)
            allowed[k].fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (int k = 0; k < kKeys; ++k) EXPECT_EQ(allowed[k].load(), 7) << k;
}

}  // namespace
}  // namespace traffik
