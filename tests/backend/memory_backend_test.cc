#include "backend/memory/memory_backend.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "clock/clock.h"
#include "common/sanitizers.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

// Resident set size of this process, from /proc/self/statm.
int64_t RssBytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * sysconf(_SC_PAGESIZE);
}

class MemoryBackendTest : public ::testing::Test {
 protected:
  MemoryBackendOptions Options(uint64_t max_buckets = 1'000'000) {
    MemoryBackendOptions o;
    o.max_buckets = max_buckets;
    o.max_bytes = uint64_t{1} << 30;
    o.sweep_interval_ms = 0;  // tests sweep by hand
    return o;
  }
  FakeClock clock_;
};

// Verifies each key is an independent bucket.
TEST_F(MemoryBackendTest, KeysAreIndependent) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{2, 60'000};
  EXPECT_TRUE(backend.DecideNow("a", rate, 1)->allowed);
  EXPECT_TRUE(backend.DecideNow("a", rate, 1)->allowed);
  EXPECT_FALSE(backend.DecideNow("a", rate, 1)->allowed);
  EXPECT_TRUE(backend.DecideNow("b", rate, 1)->allowed);
  EXPECT_EQ(backend.bucket_count(), 2u);
}

// Verifies keys are binary-safe: embedded NULs and high bytes are distinct keys.
TEST_F(MemoryBackendTest, BinarySafeKeys) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{1, 60'000};
  const std::string a("x\0a", 3), b("x\0b", 3), c("x\xff", 2);
  EXPECT_TRUE(backend.DecideNow(a, rate, 1)->allowed);
  EXPECT_TRUE(backend.DecideNow(b, rate, 1)->allowed);
  EXPECT_TRUE(backend.DecideNow(c, rate, 1)->allowed);
  EXPECT_FALSE(backend.DecideNow(a, rate, 1)->allowed);
}

// Verifies the backend follows the injected clock for refill.
TEST_F(MemoryBackendTest, RefillFollowsClock) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{1, 1000};
  ASSERT_TRUE(backend.DecideNow("k", rate, 1)->allowed);
  const Decision refused = *backend.DecideNow("k", rate, 1);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.wait_ms, 1000u);
  clock_.AdvanceMs(999);
  EXPECT_FALSE(backend.DecideNow("k", rate, 1)->allowed);
  clock_.AdvanceMs(1);
  EXPECT_TRUE(backend.DecideNow("k", rate, 1)->allowed);
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
  (void)backend.DecideNow("short", rate, 1);              // full again after 100 ms
  (void)backend.DecideNow("long", Rate{10, 100'000}, 1);  // after 10 s
  EXPECT_EQ(backend.bucket_count(), 2u);
  clock_.AdvanceMs(99);
  EXPECT_EQ(backend.SweepExpired(), 0u);
  clock_.AdvanceMs(1);
  EXPECT_EQ(backend.SweepExpired(), 1u);
  EXPECT_EQ(backend.bucket_count(), 1u);
  const Decision d = *backend.DecideNow("short", rate, 1);
  EXPECT_EQ(d.remaining, 9u);
  EXPECT_EQ(backend.evictions(), 0u);
}

// Verifies max_buckets is exact however small (it is not spread over the
// shards): with a cap of 1..5, exactly that many buckets are stored, a further
// new bucket is refused with kResourceExhausted, and the stored ones keep being
// decided exactly.
TEST_F(MemoryBackendTest, SmallBucketCapsAreExact) {
  const Rate rate{2, 3'600'000};
  for (uint64_t cap = 1; cap <= 5; ++cap) {
    MemoryBackend backend(clock_, Options(cap));
    for (uint64_t i = 0; i < 40; ++i) {
      const absl::StatusOr<Decision> d =
          backend.DecideNow(absl::StrCat("key-", i), rate, 1);
      if (i < cap) {
        ASSERT_TRUE(d.ok()) << cap << " " << i << " " << d.status();
        EXPECT_TRUE(d->allowed);
      } else {
        ASSERT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted)
            << cap << " " << i;
      }
    }
    EXPECT_EQ(backend.bucket_count(), cap);
    EXPECT_EQ(backend.default_partition()->rejections(), 40 - cap);
    for (uint64_t i = 0; i < cap; ++i) {
      const std::string key = absl::StrCat("key-", i);
      EXPECT_EQ(backend.DecideNow(key, rate, 1)->remaining, 0u) << cap;
      EXPECT_FALSE(backend.DecideNow(key, rate, 1)->allowed) << cap;
    }
  }
}

// Verifies a bucket that is not full again is never dropped for room: at the
// cap, a drained bucket stays drained however many new buckets are asked for,
// and they are refused (counted) instead.
TEST_F(MemoryBackendTest, NotFullBucketsAreNeverEvicted) {
  MemoryBackend backend(clock_, Options(MemoryBackend::kShards * 2));
  const Rate rate{1, 3'600'000};
  ASSERT_TRUE(backend.DecideNow("victim", rate, 1)->allowed);
  uint64_t refused = 0;
  for (int i = 0; i < 5000; ++i) {
    const absl::StatusOr<Decision> d =
        backend.DecideNow(absl::StrCat("flood-", i), rate, 1);
    if (!d.ok()) {
      ASSERT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);
      ++refused;
    }
    clock_.AdvanceMs(1);
  }
  EXPECT_EQ(backend.bucket_count(), MemoryBackend::kShards * 2);
  EXPECT_EQ(refused, 5000 - (MemoryBackend::kShards * 2 - 1));
  EXPECT_EQ(backend.evictions(), 0u);
  const Decision victim = *backend.DecideNow("victim", rate, 1);
  EXPECT_FALSE(victim.allowed);
  EXPECT_GT(victim.wait_ms, 3'500'000u);
}

// Verifies that at the cap, buckets that are full again are dropped (no
// state lost, counted as evictions) to make room, and only those.
TEST_F(MemoryBackendTest, FullAgainBucketsMakeRoom) {
  MemoryBackend backend(clock_, Options(3));
  const Rate rate{10, 1000};
  const Rate slow{10, 3'600'000};
  ASSERT_TRUE(backend.DecideNow("slow", slow, 5)->allowed);
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(backend.DecideNow(absl::StrCat("key-", i), rate, 1).ok()) << i;
    clock_.AdvanceMs(100);  // every earlier fast bucket is full again
  }
  EXPECT_EQ(backend.bucket_count(), 3u);
  EXPECT_GT(backend.evictions(), 1000u);
  EXPECT_EQ(backend.default_partition()->rejections(), 0u);
  EXPECT_EQ(backend.DecideNow("slow", slow, 1)->remaining, 4u);  // kept
}

// Verifies the byte budget: a bucket is charged BucketBytes(key size), which
// grows with the key, and a new bucket that does not fit is refused.
TEST_F(MemoryBackendTest, ByteBudgetRefusesNewBuckets) {
  EXPECT_EQ(MemoryBackend::BucketBytes(1), MemoryBackend::BucketBytes(15));
  EXPECT_LT(MemoryBackend::BucketBytes(15), MemoryBackend::BucketBytes(16));
  EXPECT_LT(MemoryBackend::BucketBytes(100), MemoryBackend::BucketBytes(4096));
  EXPECT_GE(MemoryBackend::BucketBytes(4096), 4096 + MemoryBackend::kTableBytesPerBucket);
  const std::string big(1000, 'x');
  MemoryBackendOptions o = Options(1'000'000);
  o.max_bytes = 3 * MemoryBackend::BucketBytes(1000) + MemoryBackend::BucketBytes(5);
  MemoryBackend backend(clock_, o);
  const Rate rate{1, 3'600'000};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(backend.DecideNow(absl::StrCat(i, big.substr(1)), rate, 1).ok()) << i;
  }
  EXPECT_EQ(backend.DecideNow(absl::StrCat(3, big.substr(1)), rate, 1).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(backend.DecideNow("small", rate, 1).ok());  // a small one still fits
  EXPECT_EQ(backend.DecideNow("small2", rate, 1).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(backend.default_partition()->bytes(), o.max_bytes);
  clock_.AdvanceMs(3'600'000);  // all full again: room for new ones
  EXPECT_TRUE(backend.DecideNow(absl::StrCat(4, big.substr(1)), rate, 1).ok());
  EXPECT_EQ(backend.bucket_count(), 1u);
  EXPECT_EQ(backend.default_partition()->bytes(), MemoryBackend::BucketBytes(1000));
}

// Verifies tenants cannot touch each other's state: a flood of new buckets in
// one partition is refused at its own share and changes nothing in another
// partition (its drained bucket stays drained, its share stays free), and the
// refusal names the tenant, never the identifier.
TEST_F(MemoryBackendTest, PartitionsAreIsolated) {
  MemoryBackend backend(clock_, Options(6));
  MemoryBackend::Partition* a = backend.AddPartition("tenant-a", {1 << 20, 3});
  MemoryBackend::Partition* b = backend.AddPartition("tenant-b", {1 << 20, 3});
  const Rate rate{1, 3'600'000};
  ASSERT_TRUE(backend.DecideNow(b, "b:victim", rate, 1)->allowed);
  for (int i = 0; i < 1000; ++i) {
    const absl::StatusOr<Decision> d =
        backend.DecideNow(a, absl::StrCat("a:secret-identifier-", i), rate, 1);
    if (i < 3) {
      ASSERT_TRUE(d.ok()) << i;
      continue;
    }
    ASSERT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_NE(d.status().message().find("'tenant-a'"), absl::string_view::npos)
        << d.status();
    EXPECT_EQ(d.status().message().find("secret"), absl::string_view::npos) << d.status();
    clock_.AdvanceMs(1);
  }
  EXPECT_EQ(a->buckets(), 3u);
  EXPECT_EQ(a->rejections(), 997u);
  EXPECT_FALSE(backend.DecideNow(b, "b:victim", rate, 1)->allowed);
  EXPECT_TRUE(backend.DecideNow(b, "b:new-1", rate, 1).ok());
  EXPECT_TRUE(backend.DecideNow(b, "b:new-2", rate, 1).ok());
  EXPECT_EQ(b->buckets(), 3u);
  EXPECT_EQ(b->rejections(), 0u);
  // The same key in two partitions is two buckets.
  EXPECT_TRUE(backend.DecideNow(a, "b:victim", rate, 1).status().code() ==
              absl::StatusCode::kResourceExhausted);
}

// Verifies a share can be changed at run time: lowering it keeps what is
// stored and refuses new buckets; raising it makes room again.
TEST_F(MemoryBackendTest, SetShareTakesEffect) {
  MemoryBackend backend(clock_, Options(100));
  MemoryBackend::Partition* p = backend.AddPartition("t", {1 << 20, 4});
  const Rate rate{1, 3'600'000};
  for (int i = 0; i < 4; ++i)
    ASSERT_TRUE(backend.DecideNow(p, absl::StrCat(i), rate, 1).ok());
  MemoryBackend::SetShare(p, {1 << 20, 2});
  EXPECT_EQ(backend.DecideNow(p, "new", rate, 1).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_FALSE(backend.DecideNow(p, "0", rate, 1)->allowed);  // kept, still drained
  MemoryBackend::SetShare(p, {1 << 20, 5});
  EXPECT_TRUE(backend.DecideNow(p, "new", rate, 1).ok());
  EXPECT_EQ(p->share().max_buckets, 5u);
}

// Verifies a batch whose new buckets do not all fit is refused whole: nothing
// is taken from the buckets that exist, nothing is stored.
TEST_F(MemoryBackendTest, BatchWithoutRoomTakesNothing) {
  MemoryBackend backend(clock_, Options(2));
  const Rate rate{5, 3'600'000};
  ASSERT_TRUE(backend.DecideNow("old", rate, 1).ok());
  const std::vector<BucketOp> ops = {
      {"old", rate, 1}, {"new-1", rate, 1}, {"new-2", rate, 1}};
  absl::StatusOr<std::vector<Decision>> batch = backend.DecideBatchNow(ops);
  EXPECT_EQ(batch.status().code(), absl::StatusCode::kResourceExhausted);
  absl::StatusOr<AllOrNothingResult> aon = backend.DecideAllOrNothingNow(ops);
  EXPECT_EQ(aon.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(backend.bucket_count(), 1u);
  EXPECT_EQ(backend.DecideNow("old", rate, 1)->remaining, 3u);  // only 2 taken
  // One new bucket fits.
  batch = backend.DecideBatchNow({{"old", rate, 1}, {"new-1", rate, 1}});
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ((*batch)[0].remaining, 2u);
  EXPECT_EQ(backend.bucket_count(), 2u);
}

// Verifies an all-or-nothing batch may span several partitions of one backend
// and charges each new bucket to its own partition.
TEST_F(MemoryBackendTest, AllOrNothingAcrossPartitions) {
  MemoryBackend backend(clock_, Options(100));
  MemoryBackend::Partition* a = backend.AddPartition("a", {1 << 20, 1});
  MemoryBackend::Partition* b = backend.AddPartition("b", {1 << 20, 1});
  const Rate rate{1, 3'600'000};
  std::vector<BucketOp> ops = {{"k", rate, 1, a}, {"k", rate, 1, b}};
  absl::StatusOr<AllOrNothingResult> r = backend.DecideAllOrNothingNow(ops);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->applied);
  EXPECT_EQ(a->buckets(), 1u);
  EXPECT_EQ(b->buckets(), 1u);
  r = backend.DecideAllOrNothingNow(ops);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->applied);
  // b has no room for another bucket: refused whole, nothing stored in a.
  MemoryBackend::SetShare(a, {1 << 20, 2});
  r = backend.DecideAllOrNothingNow({{"k2", rate, 1, a}, {"k2", rate, 1, b}});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("'b'"), absl::string_view::npos) << r.status();
  EXPECT_EQ(a->buckets(), 1u);
  EXPECT_EQ(b->rejections(), 1u);
}

// Verifies reservations are exact under concurrency: threads race new buckets
// into one partition; exactly its share is stored and the rest refused.
TEST_F(MemoryBackendTest, ConcurrentNewBucketsRespectTheShare) {
  MemoryBackend backend(clock_, Options(50));
  const Rate rate{1, 3'600'000};
  constexpr int kThreads = 6;
  constexpr int kKeysPerThread = 400;
  std::atomic<int> stored{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kKeysPerThread; ++i) {
        const absl::StatusOr<Decision> d =
            backend.DecideNow(absl::StrCat(t, "-", i), rate, 1);
        (d.ok() ? stored : refused).fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(stored.load(), 50);
  EXPECT_EQ(refused.load(), kThreads * kKeysPerThread - 50);
  EXPECT_EQ(backend.bucket_count(), 50u);
}

// Verifies the byte budget bounds the process's memory under any identifier
// mix: a backend driven far past a 48 MiB budget with buckets of a day, first
// with identifiers of 1..4096 random bytes, then (once those are full again)
// with tiny ones (the most buckets, so the largest tables), then with
// 4096-byte ones, never grows RSS by more than the budget + a fixed 16 MiB.
TEST_F(MemoryBackendTest, ByteBudgetBoundsRss) {
  if (traffik::testing::kUnderSanitizer) {
    GTEST_SKIP() << "a sanitizer's allocator changes what RSS measures";
  }
  constexpr uint64_t kBudget = uint64_t{48} << 20;
  constexpr int64_t kFixedOverhead = int64_t{16} << 20;
  MemoryBackendOptions o = Options(100'000'000);
  o.max_bytes = kBudget;
  const int64_t before = RssBytes();
  int64_t peak = 0;
  {
    MemoryBackend backend(clock_, o);
    MemoryBackend::Partition* p = backend.default_partition();
    const Rate rate{10, 86'400'000};
    std::mt19937_64 rng(42);
    std::string key;
    uint64_t serial = 0;
    // Asks for `attempts` new buckets with identifiers of size_of() bytes.
    auto phase = [&](auto size_of, uint64_t attempts) {
      const uint64_t rejections = p->rejections();
      for (uint64_t i = 0; i < attempts; ++i) {
        const size_t size = size_of();
        key.assign("t:u:{");
        for (size_t k = 0; k < size; ++k) {
          key.push_back(static_cast<char>(k < 8 ? (serial >> (8 * k)) : rng()));
        }
        key.push_back('}');
        ++serial;
        const absl::StatusOr<Decision> d = backend.DecideNow(key, rate, 1);
        ASSERT_TRUE(d.ok() || d.status().code() == absl::StatusCode::kResourceExhausted)
            << d.status();
        if (i % 2048 == 0) peak = std::max(peak, RssBytes() - before);
      }
      peak = std::max(peak, RssBytes() - before);
      EXPECT_GT(p->rejections(), rejections) << "the budget was not reached";
      EXPECT_LE(p->bytes(), kBudget);
      EXPECT_GT(p->bytes(), kBudget - MemoryBackend::BucketBytes(4200));
    };
    phase([&] { return 1 + rng() % 4096; }, 3 * kBudget / 2048);
    clock_.AdvanceMs(rate.period_ms);
    phase([&] { return 1 + rng() % 8; }, 2 * kBudget / MemoryBackend::BucketBytes(8));
    clock_.AdvanceMs(rate.period_ms);
    phase([] { return 4096; }, 3 * kBudget / 4096);
  }
  EXPECT_LE(peak, static_cast<int64_t>(kBudget) + kFixedOverhead)
      << "RSS grew by " << (peak >> 20) << " MiB for a budget of " << (kBudget >> 20)
      << " MiB";
  std::printf("peak RSS growth %.1f MiB for a budget of %llu MiB\n",
              static_cast<double>(peak) / (1 << 20),
              static_cast<unsigned long long>(kBudget >> 20));
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
        if (backend.DecideNow("hot", rate, 1)->allowed) allowed.fetch_add(1);
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
          if (backend.DecideNow(absl::StrCat("k", k), rate, 1)->allowed)
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
    const AllOrNothingResult r = *backend.DecideAllOrNothingNow(ops);
    ASSERT_TRUE(r.applied) << i;
    ASSERT_EQ(r.decisions.size(), 2u);
    EXPECT_TRUE(r.decisions[0].allowed);
    EXPECT_EQ(r.decisions[1].remaining, 4u - i);
  }
  const AllOrNothingResult refused = *backend.DecideAllOrNothingNow(ops);
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
  EXPECT_EQ(backend.DecideNow("sustained", sustained, 1)->remaining, 2u);
}

// Verifies items on one key see the tokens earlier items took, and a batch
// that is not applied creates no bucket.
TEST_F(MemoryBackendTest, AllOrNothingRepeatedKeysInOrder) {
  MemoryBackend backend(clock_, Options());
  const Rate rate{3, 60'000};
  const AllOrNothingResult fits =
      *backend.DecideAllOrNothingNow({{"k", rate, 1}, {"k", rate, 1}, {"k", rate, 1}});
  ASSERT_TRUE(fits.applied);
  EXPECT_EQ(fits.decisions[0].remaining, 2u);
  EXPECT_EQ(fits.decisions[1].remaining, 1u);
  EXPECT_EQ(fits.decisions[2].remaining, 0u);
  EXPECT_EQ(backend.bucket_count(), 1u);

  const AllOrNothingResult too_many = *backend.DecideAllOrNothingNow(
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
  EXPECT_EQ(backend.DecideNow("j", rate, 3)->remaining, 0u);

  const AllOrNothingResult empty = *backend.DecideAllOrNothingNow({});
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
            backend.DecideNow("user:1/sustained", sustained, 1)->allowed) {
          singles.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(applied.load(), 25);
  EXPECT_EQ(refused.load(), kThreads * kBatchesPerThread - 25);
  const Decision last = *backend.DecideNow("user:1/sustained", sustained, 1);
  EXPECT_EQ(last.remaining, 10'000u - 25 - singles.load() - 1);
}

}  // namespace
}  // namespace traffik
