#include "backend/memory/memory_backend.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
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

// Verifies an all-or-nothing batch takes every item's tokens or none: once
// the burst bucket refuses, the sustained bucket keeps its tokens and its
// answer describes it as it stands.
TEST_F(MemoryBackendTest, AllOrNothingTakesAllOrNothing) {
  MemoryBackend backend(clock_, Options());
  const Rate burst{2, 60'000};
  const Rate sustained{5, 3'600'000};
  const std::vector<BucketOp> ops = {{"burst", burst, 1}, {"sustained", sustained, 1}};
  for (int i = 0; i < 2; ++i) {
    const AllOrNothingResult r = backend.DecideAllOrNothingNow(ops);
    ASSERT_TRUE(r.applied) << i;
    ASSERT_EQ(r.decisions.size(), 2u);
    EXPECT_TRUE(r.decisions[0].allowed);
    EXPECT_EQ(r.decisions[1].remaining, 4u - i);
  }
  const AllOrNothingResult refused = backend.DecideAllOrNothingNow(ops);
  EXPECT_FALSE(refused.applied);
  EXPECT_FALSE(refused.decisions[0].allowed);
  EXPECT_EQ(refused.decisions[0].wait_ms, 30'000u);
  EXPECT_EQ(refused.decisions[0].remaining, 0u);
  EXPECT_EQ(refused.decisions[0].reset_ms, 60'000u);
  EXPECT_TRUE(refused.decisions[1].allowed);  // would pass alone
  EXPECT_EQ(refused.decisions[1].wait_ms, 0u);
  EXPECT_EQ(refused.decisions[1].limit, 5u);
  EXPECT_EQ(refused.decisions[1].remaining, 3u);  // nothing taken
  EXPECT_EQ(refused.decisions[1].reset_ms, 2 * 720'000u);
  // The sustained bucket still holds 3 tokens.
  EXPECT_EQ(backend.DecideNow("sustained", sustained, 1).remaining, 2u);
}

// Verifies items on one key see the tokens earlier items took, and a batch
// that is not applied creates no bucket.
TEST_F(MemoryBackendTest, AllOrNothingRepeatedKeysInOrder) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{3, 60'000};
  const AllOrNothingResult fits =
      backend.DecideAllOrNothingNow({{"k", rate, 1}, {"k", rate, 1}, {"k", rate, 1}});
  ASSERT_TRUE(fits.applied);
  EXPECT_EQ(fits.decisions[0].remaining, 2u);
  EXPECT_EQ(fits.decisions[1].remaining, 1u);
  EXPECT_EQ(fits.decisions[2].remaining, 0u);
  EXPECT_EQ(backend.bucket_count(), 1u);

  const AllOrNothingResult too_many = backend.DecideAllOrNothingNow(
      {{"j", rate, 1}, {"j", rate, 2}, {"j", rate, 1}, {"other", rate, 1}});
  EXPECT_FALSE(too_many.applied);
  EXPECT_EQ(too_many.decisions[0].wait_ms, 0u);
  EXPECT_EQ(too_many.decisions[1].wait_ms, 0u);
  // In order the third finds the bucket empty: one token is 20 s away.
  EXPECT_FALSE(too_many.decisions[2].allowed);
  EXPECT_EQ(too_many.decisions[2].wait_ms, 20'000u);
  for (const Decision& d : too_many.decisions) {
    EXPECT_EQ(d.remaining, 3u);  // every bucket as it stands: full
    EXPECT_EQ(d.reset_ms, 0u);
  }
  EXPECT_EQ(backend.bucket_count(), 1u);
  EXPECT_EQ(backend.DecideNow("j", rate, 3).remaining, 0u);

  const AllOrNothingResult empty = backend.DecideAllOrNothingNow({});
  EXPECT_TRUE(empty.applied);
  EXPECT_TRUE(empty.decisions.empty());
}

// Verifies all-or-nothing batches are exact under concurrency: threads race
// {burst, sustained} batches (in both orders, so shard locks are taken in
// opposite item orders) while others hit the same keys singly; the sustained
// bucket loses exactly one token per applied batch or single hit, never one
// for a refused batch.
TEST_F(MemoryBackendTest, AllOrNothingExactUnderConcurrency) {
  MemoryBackend backend(clock_, Options());
  const Rate burst{25, 3'600'000};
  const Rate sustained{10'000, 3'600'000};
  constexpr int kThreads = 6;
  constexpr int kBatchesPerThread = 400;
  std::atomic<int> applied{0};
  std::atomic<int> refused{0};
  std::atomic<int> singles{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kBatchesPerThread; ++i) {
        std::vector<BucketOp> ops = {{"user:1/burst", burst, 1},
                                     {"user:1/sustained", sustained, 1}};
        if (t % 2 == 1) std::swap(ops[0], ops[1]);
        bool ok = false;
        backend.DecideAllOrNothing(ops, [&](absl::StatusOr<AllOrNothingResult> r) {
          ASSERT_TRUE(r.ok());
          ok = r->applied;
        });
        (ok ? applied : refused).fetch_add(1);
        if (t == 0 && i % 4 == 0 &&
            backend.DecideNow("user:1/sustained", sustained, 1).allowed) {
          singles.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(applied.load(), 25);
  EXPECT_EQ(refused.load(), kThreads * kBatchesPerThread - 25);
  const Decision last = backend.DecideNow("user:1/sustained", sustained, 1);
  EXPECT_EQ(last.remaining, 10'000u - 25 - singles.load() - 1);
}

}  // namespace
}  // namespace traffik
