// Coalescing in the client library (ClientOptions::coalesce): against a small
// in-process ThrottleService that records every RPC and can hold its answers
// (so which checks travel together is decided by the test, not by timing),
// and against the real traffikd for per-key exactness.
//
// The fake answers each item from the item alone: limit = spec.limit,
// remaining = cost, reset_ms = spec.period_ms, wait_ms 60000 for identifiers
// starting "wait" (0 otherwise). Identifiers starting "bad" are an invalid
// item (unary NOT_FOUND; a batch holding one is refused whole with
// INVALID_ARGUMENT "requests[i]: ...", as traffikd does); "down" is an outage
// (UNAVAILABLE, the whole batch).

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "e2e/shared_traffikd.h"
#include "e2e/traffikd_process.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "traffik/client.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace traffik {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;
using Source = ThrottleResult::Source;

constexpr milliseconds kDeadline{10'000};
// Long enough never to fire in tests that flush by size or by answers.
constexpr microseconds kNever = std::chrono::duration_cast<microseconds>(kDeadline);
constexpr absl::Duration kWait = absl::Seconds(10);  // bound on every wait

class FakeServer final : public v1::ThrottleService::CallbackService {
 public:
  struct Rpc {
    bool batch = false;
    std::vector<v1::ShouldThrottleRequest> items;
    std::vector<std::string> identifiers() const {
      std::vector<std::string> out;
      for (const auto& item : items) out.push_back(item.identifier());
      return out;
    }
  };

  FakeServer() {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~FakeServer() override {
    Release();
    server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  }

  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }

  // While held, RPCs are recorded but answered only by Release().
  void Hold() {
    absl::MutexLock lock(&mu_);
    hold_ = true;
  }
  // Stops holding and answers every held RPC.
  void Release() {
    std::vector<std::function<void()>> held;
    {
      absl::MutexLock lock(&mu_);
      hold_ = false;
      held.swap(held_);
    }
    for (auto& finish : held) finish();
  }
  // Waits (bounded) until at least `n` RPCs arrived.
  bool WaitForRpcs(size_t n) {
    const absl::Time deadline = absl::Now() + kWait;
    absl::MutexLock lock(&mu_);
    while (rpcs_.size() < n) {
      if (arrived_.WaitWithDeadline(&mu_, deadline)) return rpcs_.size() >= n;
    }
    return true;
  }
  std::vector<Rpc> rpcs() {
    absl::MutexLock lock(&mu_);
    return rpcs_;
  }
  absl::Time rpc_time(size_t i) {
    absl::MutexLock lock(&mu_);
    return times_.at(i);
  }

  grpc::ServerUnaryReactor* ShouldThrottle(
      grpc::CallbackServerContext* context, const v1::ShouldThrottleRequest* request,
      v1::ShouldThrottleResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    grpc::Status status = Answer(*request, response);
    if (absl::StartsWith(request->identifier(), "bad")) {
      status = grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown throttle");
    }
    Record({false, {*request}}, [reactor, status] { reactor->Finish(status); });
    return reactor;
  }

  grpc::ServerUnaryReactor* ShouldThrottleBatch(
      grpc::CallbackServerContext* context, const v1::ShouldThrottleBatchRequest* request,
      v1::ShouldThrottleBatchResponse* response) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    grpc::Status status;
    Rpc rpc{true, {}};
    for (int i = 0; i < request->requests_size(); ++i) {
      const v1::ShouldThrottleRequest& item = request->requests(i);
      rpc.items.push_back(item);
      if (status.ok() && absl::StartsWith(item.identifier(), "bad")) {
        status =
            grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                         absl::StrCat("requests[", i, "]: NOT_FOUND: unknown throttle"));
      }
    }
    for (const v1::ShouldThrottleRequest& item : request->requests()) {
      grpc::Status s = Answer(item, response->add_responses());
      if (status.ok() && !s.ok()) status = s;
    }
    response->set_applied(true);
    Record(std::move(rpc), [reactor, status] { reactor->Finish(status); });
    return reactor;
  }

 private:
  static grpc::Status Answer(const v1::ShouldThrottleRequest& request,
                             v1::ShouldThrottleResponse* response) {
    if (absl::StartsWith(request.identifier(), "down")) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "backend down");
    }
    response->set_limit(request.spec().limit());
    response->set_remaining(request.cost());
    response->set_reset_ms(request.spec().period_ms());
    response->set_wait_ms(absl::StartsWith(request.identifier(), "wait") ? 60'000 : 0);
    return grpc::Status::OK;
  }

  void Record(Rpc rpc, std::function<void()> finish) {
    {
      absl::MutexLock lock(&mu_);
      rpcs_.push_back(std::move(rpc));
      times_.push_back(absl::Now());
      arrived_.SignalAll();
      if (hold_) {
        held_.push_back(std::move(finish));
        return;
      }
    }
    finish();
  }

  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  absl::Mutex mu_;
  bool hold_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<Rpc> rpcs_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Time> times_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> held_ ABSL_GUARDED_BY(mu_);
  absl::CondVar arrived_;
};

// A request whose fake answer identifies it: limit = `limit`, remaining = cost.
ThrottleRequest Req(const std::string& identifier, uint64_t limit = 1, uint32_t cost = 1,
                    const std::string& tenant = "") {
  ThrottleRequest request;
  request.identifier = identifier;
  request.throttle_uid = "coalesce-test";
  request.tenant = tenant;
  request.cost = cost;
  request.spec = ThrottleSpec{limit, milliseconds(3'600'000)};
  return request;
}

class CoalesceTest : public ::testing::Test {
 protected:
  std::shared_ptr<Client> MakeClient(microseconds max_delay, size_t max_batch,
                                     milliseconds deadline = kDeadline) {
    ClientOptions options;
    options.target = fake_.address();
    options.deadline = deadline;
    options.coalesce = CoalesceOptions{.max_delay = max_delay, .max_batch = max_batch};
    options.log = [this](const std::string& line) {
      absl::MutexLock lock(&log_mu_);
      log_lines_.push_back(line);
    };
    absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(std::move(options));
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *client : nullptr;
  }

  // Holds the fake and sends one check that goes alone (nothing in flight),
  // so the checks after it queue while it is held.
  std::future<absl::StatusOr<ThrottleResult>> Occupy(Client& client) {
    fake_.Hold();
    auto future = client.CheckFuture(Req("first", 999));
    EXPECT_TRUE(fake_.WaitForRpcs(1));
    return future;
  }

  size_t log_lines() {
    absl::MutexLock lock(&log_mu_);
    return log_lines_.size();
  }

  FakeServer fake_;
  absl::Mutex log_mu_;
  std::vector<std::string> log_lines_ ABSL_GUARDED_BY(log_mu_);
};

// Verifies Create rejects coalesce options out of range with kInvalidArgument
// naming the option, and accepts the bounds.
TEST(CoalesceOptionsTest, CreateValidatesCoalesceOptions) {
  auto create = [](microseconds max_delay, size_t max_batch) {
    ClientOptions options;
    options.deadline = milliseconds(200);
    options.coalesce = CoalesceOptions{.max_delay = max_delay, .max_batch = max_batch};
    return Client::Create(options).status();
  };
  for (microseconds bad : {microseconds(0), microseconds(-1), microseconds(200'001)}) {
    absl::Status s = create(bad, 64);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad.count();
    EXPECT_THAT(s.message(), HasSubstr("coalesce.max_delay"));
  }
  for (size_t bad : {size_t{0}, kMaxCoalesceBatch + 1}) {
    absl::Status s = create(microseconds(500), bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(s.message(), HasSubstr("coalesce.max_batch"));
  }
  EXPECT_TRUE(create(microseconds(1), 1).ok());
  EXPECT_TRUE(create(microseconds(200'000), kMaxCoalesceBatch).ok());
  ClientOptions defaults;
  defaults.coalesce = CoalesceOptions{};
  EXPECT_TRUE(Client::Create(defaults).ok());
  EXPECT_FALSE(ClientOptions{}.coalesce.has_value());  // off by default
}

// Verifies N threads checking concurrently travel as one ShouldThrottleBatch
// (items as queued) and each thread gets exactly its own answer.
TEST_F(CoalesceTest, ConcurrentChecksTravelInOneBatchWithOwnAnswers) {
  constexpr int kThreads = 32;
  std::shared_ptr<Client> client = MakeClient(kNever, kThreads);
  auto first = Occupy(*client);
  std::vector<std::optional<absl::StatusOr<ThrottleResult>>> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      results[t] = client->Check(Req(absl::StrCat("t", t), 100 + t, t + 1));
    });
  }
  ASSERT_TRUE(fake_.WaitForRpcs(2));
  fake_.Release();
  for (std::thread& thread : threads) thread.join();
  ASSERT_TRUE(first.get().ok());

  std::vector<FakeServer::Rpc> rpcs = fake_.rpcs();
  ASSERT_EQ(rpcs.size(), 2u);
  EXPECT_FALSE(rpcs[0].batch);
  EXPECT_TRUE(rpcs[1].batch);
  ASSERT_EQ(rpcs[1].items.size(), static_cast<size_t>(kThreads));
  std::set<std::string> sent;
  for (const auto& item : rpcs[1].items) sent.insert(item.identifier());
  EXPECT_EQ(sent.size(), static_cast<size_t>(kThreads));
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_TRUE(results[t].has_value());
    ASSERT_TRUE(results[t]->ok()) << results[t]->status();
    const ThrottleResult& r = **results[t];
    EXPECT_TRUE(r.allowed);
    EXPECT_EQ(r.limit, static_cast<uint64_t>(100 + t));
    EXPECT_EQ(r.remaining, static_cast<uint64_t>(t + 1));
    EXPECT_EQ(r.source, Source::kServer);
  }
  ClientStats stats = client->stats();
  EXPECT_EQ(stats.rpcs, 2u);
  EXPECT_EQ(stats.coalesced, static_cast<uint64_t>(kThreads));
  EXPECT_EQ(stats.failures, 0u);
}

// Verifies queued checks keep their arrival order in the batch (one key
// checked several times is decided in that order) and the queue goes out as
// soon as the RPC in flight answers.
TEST_F(CoalesceTest, QueuedChecksKeepArrivalOrder) {
  std::shared_ptr<Client> client = MakeClient(kNever, 64);
  auto first = Occupy(*client);
  std::vector<std::future<absl::StatusOr<ThrottleResult>>> futures;
  for (uint32_t cost = 1; cost <= 10; ++cost) {
    futures.push_back(client->CheckFuture(Req("same-key", 50, cost)));
  }
  EXPECT_EQ(fake_.rpcs().size(), 1u);  // queued behind the held check
  fake_.Release();
  for (uint32_t cost = 1; cost <= 10; ++cost) {
    absl::StatusOr<ThrottleResult> r = futures[cost - 1].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->remaining, cost);
  }
  ASSERT_TRUE(first.get().ok());
  std::vector<FakeServer::Rpc> rpcs = fake_.rpcs();
  ASSERT_EQ(rpcs.size(), 2u);
  ASSERT_EQ(rpcs[1].items.size(), 10u);
  for (uint32_t i = 0; i < 10; ++i) EXPECT_EQ(rpcs[1].items[i].cost(), i + 1);
}

// Verifies no batch holds more than max_batch checks: a full queue is sent at
// once, the rest when the RPCs in flight have answered.
TEST_F(CoalesceTest, MaxBatchIsRespected) {
  std::shared_ptr<Client> client = MakeClient(kNever, 4);
  auto first = Occupy(*client);
  std::vector<std::future<absl::StatusOr<ThrottleResult>>> futures;
  for (int i = 0; i < 10; ++i) {
    futures.push_back(client->CheckFuture(Req(absl::StrCat("m", i), 10 + i)));
  }
  ASSERT_TRUE(fake_.WaitForRpcs(3));  // the held check and two full batches
  EXPECT_EQ(fake_.rpcs().size(), 3u);
  fake_.Release();
  for (int i = 0; i < 10; ++i) {
    absl::StatusOr<ThrottleResult> r = futures[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->limit, static_cast<uint64_t>(10 + i));
  }
  ASSERT_TRUE(first.get().ok());
  std::vector<FakeServer::Rpc> rpcs = fake_.rpcs();
  ASSERT_EQ(rpcs.size(), 4u);
  // The two full batches were in flight together: they may arrive in either
  // order. The rest went after both had answered.
  EXPECT_THAT((std::vector<std::vector<std::string>>{rpcs[1].identifiers(),
                                                     rpcs[2].identifiers()}),
              UnorderedElementsAre(ElementsAre("m0", "m1", "m2", "m3"),
                                   ElementsAre("m4", "m5", "m6", "m7")));
  EXPECT_THAT(rpcs[3].identifiers(), ElementsAre("m8", "m9"));
  EXPECT_EQ(client->stats().coalesced, 10u);
}

// Verifies a queue that neither fills nor sees the RPC in flight answer is
// sent max_delay after its first check arrived.
TEST_F(CoalesceTest, MaxDelayFlushesTheQueue) {
  constexpr microseconds kDelay{50'000};
  std::shared_ptr<Client> client = MakeClient(kDelay, 64);
  auto first = Occupy(*client);  // held until the end
  const absl::Time queued_at = absl::Now();
  std::vector<std::future<absl::StatusOr<ThrottleResult>>> futures;
  for (int i = 0; i < 3; ++i) {
    futures.push_back(client->CheckFuture(Req(absl::StrCat("d", i), 20 + i)));
  }
  ASSERT_TRUE(fake_.WaitForRpcs(2));
  const absl::Duration waited = fake_.rpc_time(1) - queued_at;
  EXPECT_GE(waited, absl::FromChrono(kDelay));
  EXPECT_LT(waited, absl::Seconds(2));  // generous: 2 shared cores
  std::vector<FakeServer::Rpc> rpcs = fake_.rpcs();
  ASSERT_EQ(rpcs.size(), 2u);
  EXPECT_THAT(rpcs[1].identifiers(), ElementsAre("d0", "d1", "d2"));
  EXPECT_EQ(first.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
  fake_.Release();
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<ThrottleResult> r = futures[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->limit, static_cast<uint64_t>(20 + i));
  }
}

// Verifies a lone check with nothing in flight is sent at once as a plain
// ShouldThrottle, without waiting max_delay.
TEST_F(CoalesceTest, LoneCheckIsSentAtOnce) {
  std::shared_ptr<Client> client = MakeClient(kNever, 64);
  const absl::Time start = absl::Now();
  absl::StatusOr<ThrottleResult> r = client->Check(Req("alone", 7));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->limit, 7u);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));  // max_delay is 10 s
  std::vector<FakeServer::Rpc> rpcs = fake_.rpcs();
  ASSERT_EQ(rpcs.size(), 1u);
  EXPECT_FALSE(rpcs[0].batch);
  EXPECT_EQ(client->stats().coalesced, 0u);
}

// Verifies an invalid check refused with its whole batch gets exactly the
// error it gets alone (NOT_FOUND, whatever the policy), and the other checks
// of the batch get their own answers.
TEST_F(CoalesceTest, InvalidItemGetsItsOwnErrorOthersTheirAnswers) {
  std::shared_ptr<Client> client = MakeClient(kNever, 64);
  auto first = Occupy(*client);
  auto a = client->CheckFuture(Req("a", 1));
  auto bad = client->CheckFuture(Req("bad", 2), FailurePolicy::kAllow);
  auto c = client->CheckFuture(Req("c", 3));
  auto d = client->CheckFuture(Req("d", 4));
  auto e = client->CheckFuture(Req("e", 5));
  fake_.Release();
  ASSERT_TRUE(first.get().ok());
  absl::StatusOr<ThrottleResult> bad_result = bad.get();
  EXPECT_EQ(bad_result.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(bad_result.status().message(), "unknown throttle");
  uint64_t limit = 1;
  for (auto* f : {&a, &c, &d, &e}) {
    if (limit == 2) ++limit;
    absl::StatusOr<ThrottleResult> r = f->get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->limit, limit++);
  }
  // The batch of 5 refused, then its halves [a bad] (refused: a and bad
  // alone) and [c d e] (answered).
  std::vector<FakeServer::Rpc> rpcs = fake_.rpcs();
  ASSERT_EQ(rpcs.size(), 6u);
  EXPECT_THAT(rpcs[1].identifiers(), ElementsAre("a", "bad", "c", "d", "e"));
  std::multiset<std::vector<std::string>> rest;
  for (size_t i = 2; i < rpcs.size(); ++i) rest.insert(rpcs[i].identifiers());
  EXPECT_EQ(rest, (std::multiset<std::vector<std::string>>{
                      {"a", "bad"}, {"c", "d", "e"}, {"a"}, {"bad"}}));
}

// Verifies an outage of a whole batch is turned into each check's answer under
// its own failure policy, counted and logged once.
TEST_F(CoalesceTest, OutageFollowsEachChecksPolicy) {
  std::shared_ptr<Client> client = MakeClient(kNever, 64);
  auto first = Occupy(*client);
  auto allow = client->CheckFuture(Req("down-1"), FailurePolicy::kAllow);
  auto deny = client->CheckFuture(Req("down-2"), FailurePolicy::kDeny);
  auto raise = client->CheckFuture(Req("down-3"), FailurePolicy::kRaise);
  fake_.Release();
  ASSERT_TRUE(first.get().ok());
  absl::StatusOr<ThrottleResult> r = allow.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->allowed);
  EXPECT_EQ(r->source, Source::kFailurePolicy);
  r = deny.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->allowed);
  EXPECT_EQ(r->wait, milliseconds(1000));  // ClientOptions::deny_wait
  EXPECT_EQ(r->source, Source::kFailurePolicy);
  r = raise.get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable);
  ClientStats stats = client->stats();
  EXPECT_EQ(stats.rpcs, 2u);
  EXPECT_EQ(stats.failures, 1u);
  EXPECT_EQ(stats.coalesced, 3u);
  EXPECT_EQ(log_lines(), 1u);
}

// Verifies a coalesced check's deadline counts its time in the queue: with
// traffikd not answering, a queued Check ends with kDeadlineExceeded within
// its deadline (plus scheduling) of its own start.
TEST_F(CoalesceTest, DeadlineBoundsQueueingAndRpc) {
  constexpr milliseconds kShort{300};
  std::shared_ptr<Client> client = MakeClient(microseconds(200'000), 64, kShort);
  auto first = Occupy(*client);  // never answered in time
  const absl::Time start = absl::Now();
  absl::StatusOr<ThrottleResult> r = client->Check(Req("late", 1));
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_GE(took, absl::FromChrono(kShort) - absl::Milliseconds(5));
  EXPECT_LT(took, absl::FromChrono(kShort) + absl::Seconds(1));
  EXPECT_EQ(first.get().status().code(), absl::StatusCode::kDeadlineExceeded);
}

// Verifies checks of several tenants queued together go as one batch per
// tenant, each in arrival order.
TEST_F(CoalesceTest, OneBatchPerTenant) {
  std::shared_ptr<Client> client = MakeClient(kNever, 64);
  auto first = Occupy(*client);
  std::vector<std::future<absl::StatusOr<ThrottleResult>>> futures;
  futures.push_back(client->CheckFuture(Req("x1", 1, 1, "red")));
  futures.push_back(client->CheckFuture(Req("y1", 2, 1, "blue")));
  futures.push_back(client->CheckFuture(Req("x2", 3, 1, "red")));
  futures.push_back(client->CheckFuture(Req("y2", 4, 1, "blue")));
  fake_.Release();
  for (uint64_t i = 0; i < futures.size(); ++i) {
    absl::StatusOr<ThrottleResult> r = futures[i].get();
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->limit, i + 1);
  }
  ASSERT_TRUE(first.get().ok());
  std::vector<FakeServer::Rpc> rpcs = fake_.rpcs();
  ASSERT_EQ(rpcs.size(), 3u);
  // Sent together: they may arrive in either order.
  EXPECT_THAT((std::vector<std::vector<std::string>>{rpcs[1].identifiers(),
                                                     rpcs[2].identifiers()}),
              UnorderedElementsAre(ElementsAre("x1", "x2"), ElementsAre("y1", "y2")));
}

// Verifies CheckBatch is never coalesced: it goes at once as its own RPC, even
// while a coalesced check is in flight.
TEST_F(CoalesceTest, CheckBatchIsNotCoalesced) {
  std::shared_ptr<Client> client = MakeClient(kNever, 64);
  auto first = Occupy(*client);
  std::promise<absl::StatusOr<BatchResult>> done;
  client->CheckBatchAsync(
      {Req("b1", 1), Req("b2", 2)},
      [&done](absl::StatusOr<BatchResult> r) { done.set_value(std::move(r)); });
  ASSERT_TRUE(fake_.WaitForRpcs(2));
  std::vector<FakeServer::Rpc> rpcs = fake_.rpcs();
  EXPECT_THAT(rpcs[1].identifiers(), ElementsAre("b1", "b2"));
  fake_.Release();
  absl::StatusOr<BatchResult> r = done.get_future().get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[1].limit, 2u);
  ASSERT_TRUE(first.get().ok());
  EXPECT_EQ(client->stats().coalesced, 0u);
}

// Verifies a refusal answered in a coalesced batch feeds the short-circuit:
// the next check of that key is refused locally without an RPC.
TEST_F(CoalesceTest, ShortCircuitKeepsWorking) {
  std::shared_ptr<Client> client = MakeClient(kNever, 64);
  auto first = Occupy(*client);
  auto w1 = client->CheckFuture(Req("wait-key", 5));
  auto w2 = client->CheckFuture(Req("other", 6));
  fake_.Release();
  absl::StatusOr<ThrottleResult> r = w1.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->allowed);
  ASSERT_TRUE(w2.get().ok());
  ASSERT_TRUE(first.get().ok());
  const uint64_t rpcs = client->stats().rpcs;
  r = client->Check(Req("wait-key", 5));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->allowed);
  EXPECT_EQ(r->source, Source::kShortCircuit);
  EXPECT_EQ(client->stats().rpcs, rpcs);
  EXPECT_EQ(client->stats().short_circuited, 1u);
}

// Verifies checks queued when the application drops its last reference to the
// Client are still sent (by the flusher, after max_delay) and answered: the
// queue keeps the Client alive.
TEST_F(CoalesceTest, QueuedChecksOutliveTheClientReference) {
  std::shared_ptr<Client> client = MakeClient(microseconds(20'000), 64);
  auto first = Occupy(*client);
  auto a = client->CheckFuture(Req("kept-a", 41));
  auto b = client->CheckFuture(Req("kept-b", 42));
  client.reset();
  ASSERT_TRUE(fake_.WaitForRpcs(2));
  fake_.Release();
  absl::StatusOr<ThrottleResult> r = a.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->limit, 41u);
  r = b.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->limit, 42u);
  ASSERT_TRUE(first.get().ok());
  EXPECT_THAT(fake_.rpcs()[1].identifiers(), ElementsAre("kept-a", "kept-b"));
}

// Against the real traffikd: many threads on one key and on keys of their own,
// coalesced; exactly `limit` hits of the shared key are allowed (each
// remaining count once), and each own key answers with its own limit.
class CoalesceTraffikdTest : public e2e::SharedTraffikdTest {};

// Verifies per-key exactness and per-caller answers through coalescing on the
// real traffikd.
TEST_F(CoalesceTraffikdTest, ExactAcrossThreads) {
  ClientOptions options;
  options.target = server().grpc_address();
  options.deadline = milliseconds(5000);
  options.short_circuit_max_keys = 0;  // every check reaches traffikd
  options.coalesce = CoalesceOptions{.max_delay = microseconds(2000), .max_batch = 16};
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
  ASSERT_TRUE(client.ok()) << client.status();
  constexpr int kThreads = 48;
  constexpr uint64_t kLimit = 10;
  std::vector<std::optional<absl::StatusOr<ThrottleResult>>> shared(kThreads);
  std::vector<std::optional<absl::StatusOr<ThrottleResult>>> own(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();
      shared[t] = (*client)->Check(Req("exact-shared", kLimit));
      own[t] = (*client)->Check(Req(absl::StrCat("exact-own-", t), 100 + t));
    });
  }
  for (std::thread& thread : threads) thread.join();
  std::multiset<uint64_t> remaining;
  int allowed = 0;
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_TRUE(shared[t]->ok()) << shared[t]->status();
    if ((*shared[t])->allowed) {
      ++allowed;
      remaining.insert((*shared[t])->remaining);
    }
    ASSERT_TRUE(own[t]->ok()) << own[t]->status();
    EXPECT_TRUE((*own[t])->allowed);
    EXPECT_EQ((*own[t])->limit, static_cast<uint64_t>(100 + t));
    EXPECT_EQ((*own[t])->remaining, static_cast<uint64_t>(100 + t - 1));
  }
  EXPECT_EQ(allowed, static_cast<int>(kLimit));
  EXPECT_EQ(remaining, (std::multiset<uint64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  ClientStats stats = (*client)->stats();
  EXPECT_EQ(stats.failures, 0u);
  EXPECT_LE(stats.rpcs, static_cast<uint64_t>(2 * kThreads));
}

}  // namespace
}  // namespace traffik
