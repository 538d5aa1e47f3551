#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace traffik {

// A monotonic time source in milliseconds. Everything time-based in the server
// takes a Clock so tests can drive time with FakeClock instead of sleeping.
// Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  // Milliseconds since an arbitrary fixed origin; never decreases.
  virtual int64_t NowMs() const = 0;
};

// The real monotonic clock (std::chrono::steady_clock).
class SteadyClock final : public Clock {
 public:
  int64_t NowMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  // A process-wide instance.
  static SteadyClock& Get() {
    static SteadyClock clock;
    return clock;
  }
};

// A clock that only moves when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1'000'000) : now_ms_(start_ms) {}
  int64_t NowMs() const override { return now_ms_.load(std::memory_order_relaxed); }
  void AdvanceMs(int64_t delta_ms) {
    now_ms_.fetch_add(delta_ms, std::memory_order_relaxed);
  }
  void SetMs(int64_t now_ms) { now_ms_.store(now_ms, std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> now_ms_;
};

}  // namespace traffik
