#include "bucket/token_bucket.h"

#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace traffik {
namespace {

// Drives one bucket through time like a backend would.
class TokenBucketTest : public ::testing::Test {
 protected:
  Decision Hit(const Rate& rate, int64_t now_ms, uint64_t cost = 1) {
    BucketState next;
    const Decision d = Decide(exists_ ? &state_ : nullptr, rate, cost, now_ms, &next);
    state_ = next;
    exists_ = true;
    return d;
  }

  BucketState state_;
  bool exists_ = false;
};

// Verifies a new bucket is full and a burst of exactly `limit` hits passes.
TEST_F(TokenBucketTest, BurstUpToCapacityThenRefuse) {
  const Rate rate{5, 1000};
  for (uint64_t i = 0; i < 5; ++i) {
    const Decision d = Hit(rate, 0);
    EXPECT_TRUE(d.allowed) << i;
    EXPECT_EQ(d.wait_ms, 0u);
    EXPECT_EQ(d.limit, 5u);
    EXPECT_EQ(d.remaining, 4 - i);
  }
  const Decision refused = Hit(rate, 0);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.remaining, 0u);
  EXPECT_EQ(refused.wait_ms, 200u);  // one token per 200 ms
  EXPECT_EQ(refused.reset_ms, 1000u);
}

// Verifies the first hit on a new bucket reports the time until it is full.
TEST_F(TokenBucketTest, FirstHitReportsReset) {
  const Decision d = Hit(Rate{10, 60'000}, 0);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 9u);
  EXPECT_EQ(d.reset_ms, 6'000u);
}

// Verifies tokens refill continuously, in proportion to elapsed time.
TEST_F(TokenBucketTest, ContinuousRefill) {
  const Rate rate{10, 1000};  // one token per 100 ms
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(Hit(rate, 0).allowed);
  EXPECT_FALSE(Hit(rate, 99).allowed);
  EXPECT_EQ(Hit(rate, 99).wait_ms, 1u);
  const Decision at_100 = Hit(rate, 100);
  EXPECT_TRUE(at_100.allowed);
  EXPECT_EQ(at_100.remaining, 0u);
  // 350 ms later: 3.5 tokens, 3 whole ones usable.
  EXPECT_TRUE(Hit(rate, 450).allowed);
  EXPECT_TRUE(Hit(rate, 450).allowed);
  EXPECT_TRUE(Hit(rate, 450).allowed);
  const Decision half = Hit(rate, 450);
  EXPECT_FALSE(half.allowed);
  EXPECT_EQ(half.wait_ms, 50u);  // the half token left needs 50 ms more
}

// Verifies a refused hit takes nothing: waiting exactly wait_ms then succeeds.
TEST_F(TokenBucketTest, RefusalTakesNothing) {
  const Rate rate{3, 3000};
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Hit(rate, 0).allowed);
  Decision d;
  for (int i = 0; i < 100; ++i) d = Hit(rate, 500);  // many refusals
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.wait_ms, 500u);
  EXPECT_FALSE(Hit(rate, 999).allowed);
  EXPECT_TRUE(Hit(rate, 1000).allowed);
}

// Verifies a hit of cost c takes c tokens and waits for all c when short.
TEST_F(TokenBucketTest, CostTakesSeveralTokens) {
  const Rate rate{10, 10'000};  // one token per second
  const Decision big = Hit(rate, 0, 7);
  EXPECT_TRUE(big.allowed);
  EXPECT_EQ(big.remaining, 3u);
  EXPECT_EQ(big.reset_ms, 7'000u);
  const Decision too_big = Hit(rate, 0, 5);
  EXPECT_FALSE(too_big.allowed);
  EXPECT_EQ(too_big.wait_ms, 2'000u);
  EXPECT_EQ(too_big.remaining, 3u);  // nothing taken
  EXPECT_TRUE(Hit(rate, 0, 3).allowed);
  EXPECT_FALSE(Hit(rate, 0, 1).allowed);
}

// Verifies wait_ms rounds up to at least 1 ms when less than a ms is missing.
TEST_F(TokenBucketTest, WaitIsAtLeastOneMillisecond) {
  const Rate rate{1000, 1};  // a token every microsecond
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(Hit(rate, 0).allowed);
  const Decision d = Hit(rate, 0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.wait_ms, 1u);
  EXPECT_TRUE(Hit(rate, 1).allowed);
}

// Verifies a bucket never holds more than its capacity, however long idle.
TEST_F(TokenBucketTest, RefillCapsAtCapacity) {
  const Rate rate{4, 1000};
  ASSERT_TRUE(Hit(rate, 0).allowed);
  const Decision d = Hit(rate, 1'000'000'000);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 3u);
  EXPECT_EQ(d.reset_ms, 250u);
}

// Verifies an hour-long period (e.g. "1h5m30.5s" = 3930500 ms) refills exactly.
TEST_F(TokenBucketTest, CombinedDurationPeriod) {
  const Rate rate{7861, 3'930'500};  // one token per 500 ms
  for (int i = 0; i < 7861; ++i) ASSERT_TRUE(Hit(rate, 0).allowed);
  const Decision d = Hit(rate, 0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.wait_ms, 500u);
  EXPECT_EQ(d.reset_ms, 3'930'500u);
  EXPECT_TRUE(Hit(rate, 500).allowed);
}

// Verifies no drift: a steady stream at exactly the refill rate is always
// allowed over a long run, and one more hit per period is not.
TEST_F(TokenBucketTest, NoDriftOverLongRuns) {
  const Rate rate{3, 1000};  // 1 token per 333.33 ms
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Hit(rate, 0).allowed);
  uint64_t allowed = 0;
  // One million ms at one attempt per ms: exactly 3 tokens per second refill.
  for (int64_t t = 1; t <= 1'000'000; ++t) allowed += Hit(rate, t).allowed ? 1 : 0;
  EXPECT_EQ(allowed, 3000u);
}

// Verifies a clock step backwards is treated as no time passing.
TEST_F(TokenBucketTest, ClockGoingBackwardsRefillsNothing) {
  const Rate rate{2, 1000};
  ASSERT_TRUE(Hit(rate, 10'000).allowed);
  ASSERT_TRUE(Hit(rate, 10'000).allowed);
  EXPECT_FALSE(Hit(rate, 5'000).allowed);
  EXPECT_FALSE(Hit(rate, 10'000).allowed);  // no double refill after the step
  EXPECT_TRUE(Hit(rate, 10'500).allowed);
}

// Verifies FullAtMs says when a bucket equals a new one.
TEST_F(TokenBucketTest, FullAtMs) {
  const Rate rate{10, 1000};
  Hit(rate, 100, 4);
  EXPECT_EQ(FullAtMs(state_, rate), 500);
}

// Verifies a state written under a larger rate (another spec, a lowered
// limit or multiplier) is read as full under the current rate: sane
// remaining/reset_ms/wait_ms, no unsigned underflow of full - scaled.
TEST_F(TokenBucketTest, StateFromLargerRateIsClampedToFull) {
  const Rate huge{uint64_t{1} << 53, 1};
  const Rate small{10, 60'000};
  Hit(huge, 1000);  // leaves 2^53 - 1 token-ms
  ASSERT_GT(state_.scaled_tokens, small.capacity * small.period_ms);
  EXPECT_EQ(FullAtMs(state_, small), 1000);
  const Decision d = Hit(small, 1000);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.limit, 10u);
  EXPECT_EQ(d.remaining, 9u);
  EXPECT_EQ(d.reset_ms, 6000u);
  for (int i = 0; i < 9; ++i) EXPECT_TRUE(Hit(small, 1000).allowed);
  const Decision refused = Hit(small, 1000);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.wait_ms, 6000u);
  EXPECT_EQ(refused.reset_ms, 60'000u);

  // Also when asking with cost 0 (describe only) and when time passed.
  BucketState big{uint64_t{1} << 53, 0};
  BucketState out;
  const Decision look = Decide(&big, small, 0, 10, &out);
  EXPECT_EQ(look.remaining, 10u);
  EXPECT_EQ(look.reset_ms, 0u);
  EXPECT_EQ(out.scaled_tokens, 600'000u);
}

// Verifies the rate bounds: zero values and overflowing products are invalid.
TEST(RateTest, Validity) {
  EXPECT_TRUE(IsValidRate(Rate{1, 1}));
  EXPECT_FALSE(IsValidRate(Rate{0, 1000}));
  EXPECT_FALSE(IsValidRate(Rate{10, 0}));
  EXPECT_TRUE(IsValidRate(Rate{uint64_t{1} << 23, uint64_t{1} << 30}));
  EXPECT_FALSE(IsValidRate(Rate{(uint64_t{1} << 23) + 1, uint64_t{1} << 30}));
  EXPECT_FALSE(IsValidRate(Rate{UINT64_MAX, UINT64_MAX}));
}

// Verifies the largest valid rate does not overflow at the edges.
TEST_F(TokenBucketTest, LargestRateIsExact) {
  const Rate rate{uint64_t{1} << 23, uint64_t{1} << 30};
  const Decision d = Hit(rate, 0, uint64_t{1} << 23);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 0u);
  EXPECT_EQ(d.reset_ms, uint64_t{1} << 30);
  const Decision later = Hit(rate, int64_t{1} << 29, 1);
  EXPECT_TRUE(later.allowed);
  EXPECT_EQ(later.remaining, (uint64_t{1} << 22) - 1);
}

}  // namespace
}  // namespace traffik
