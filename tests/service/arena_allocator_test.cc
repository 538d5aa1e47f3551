#include "service/arena_allocator.h"

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "traffik/v1/throttle.pb.h"

namespace traffik {
namespace {

using traffik::v1::ShouldThrottleBatchRequest;
using traffik::v1::ShouldThrottleBatchResponse;
using Allocator =
    ArenaMessageAllocator<ShouldThrottleBatchRequest, ShouldThrottleBatchResponse>;
using Holder =
    grpc::MessageHolder<ShouldThrottleBatchRequest, ShouldThrottleBatchResponse>;

// Verifies a call's request and response live on one protobuf arena, and that
// a released call's arena comes back for the next call with fresh, empty
// messages (nothing of the previous call is visible).
TEST(ArenaMessageAllocatorTest, OneArenaPerCallReusedEmpty) {
  Allocator allocator;
  Holder* first = allocator.AllocateMessages();
  google::protobuf::Arena* arena = first->request()->GetArena();
  ASSERT_NE(arena, nullptr);
  EXPECT_EQ(first->response()->GetArena(), arena);
  // A batch larger than the arena's first block: the arena grows.
  for (int i = 0; i < 1000; ++i) {
    v1::ShouldThrottleRequest* item = first->request()->add_requests();
    item->set_identifier("an identifier longer than the small-string buffer");
    item->set_throttle_uid("api");
    item->mutable_spec()->set_limit(10);
    first->response()->add_responses()->set_limit(10);
  }
  EXPECT_EQ(first->request()->requests(999).GetArena(), arena);
  first->Release();
  EXPECT_EQ(allocator.pooled(), 1u);

  Holder* second = allocator.AllocateMessages();
  EXPECT_EQ(allocator.pooled(), 0u);
  EXPECT_EQ(second->request()->GetArena(), arena);  // the same arena, reset
  EXPECT_EQ(second->request()->requests_size(), 0);
  EXPECT_EQ(second->response()->responses_size(), 0);
  EXPECT_FALSE(second->request()->all_or_nothing());
  second->Release();
}

// Verifies the pool keeps at most max_pooled arenas: more calls in flight at
// once than that are served (each gets its own arena) and the extra arenas
// are freed when released.
TEST(ArenaMessageAllocatorTest, PoolIsBounded) {
  Allocator allocator(/*max_pooled=*/2);
  std::vector<Holder*> held;
  for (int i = 0; i < 5; ++i) held.push_back(allocator.AllocateMessages());
  for (size_t i = 0; i < held.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      EXPECT_NE(held[i]->request()->GetArena(), held[j]->request()->GetArena());
    }
  }
  for (Holder* h : held) h->Release();
  EXPECT_EQ(allocator.pooled(), 2u);
}

// Verifies calls allocated on one thread may be released on others (the
// Redis backend finishes calls on its I/O thread), concurrently: every arena
// is accounted for (run under ThreadSanitizer by CI).
TEST(ArenaMessageAllocatorTest, ReleasedConcurrentlyOnOtherThreads) {
  Allocator allocator(/*max_pooled=*/64);
  constexpr int kThreads = 4;
  constexpr int kCallsPerThread = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&allocator] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        Holder* h = allocator.AllocateMessages();
        h->request()->add_requests()->set_identifier("k");
        std::thread releaser([h] { h->Release(); });
        releaser.join();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_GE(allocator.pooled(), 1u);
  EXPECT_LE(allocator.pooled(), static_cast<size_t>(kThreads));
}

}  // namespace
}  // namespace traffik
