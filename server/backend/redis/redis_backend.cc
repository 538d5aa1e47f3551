#include "backend/redis/redis_backend.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <deque>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "backend/redis/cluster_topology.h"
#include "backend/redis/key_scan.h"
#include "backend/redis/key_slot.h"
#include "backend/redis/redis_tls.h"
#include "backend/redis/script_registry.h"
#include "backend/redis/script_reply.h"
#include "base/error_reason.h"
#include "base/log.h"

namespace traffik {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// True for an error reply that says the request itself could not run (a
// script error, a key of another type): the backend answered, so it is no
// outage and no on_backend_error policy may turn it into an allowed hit.
bool IsScriptFault(absl::string_view error) {
  return absl::StartsWith(error, "WRONGTYPE") ||
         absl::StartsWith(error, "ERR user_script") ||
         absl::StartsWith(error, "ERR Error running script");
}

struct ReplyDeleter {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};
using ReplyPtr = std::unique_ptr<redisReply, ReplyDeleter>;

constexpr int kMaxRedirects = 5;
constexpr int64_t kMinBackoffMs = 50;
constexpr int64_t kMaxBackoffMs = 2000;
constexpr int64_t kSlotRefreshIntervalMs = 10'000;
constexpr size_t kMaxOutageReasons = 4;
// Bounds of one coalesced call (the each script): items, and bytes of keys.
constexpr size_t kMaxEachItems = 128;
constexpr size_t kMaxEachKeyBytes = 64 * 1024;
// A connection's `staged` keeps its capacity across flushes up to this; a
// burst above it (a large batch) is not held for the connection's lifetime.
constexpr size_t kMaxKeptStagedBytes = 256 * 1024;

// RESP, written straight into one reusable buffer (no hiredis formatting, no
// argv arrays): an array header, then each argument as a bulk string.
void AppendDecimal(std::string* out, uint64_t value) {
  char digits[24];
  char* end = absl::numbers_internal::FastIntToBuffer(value, digits);
  out->append(digits, end);
}

void AppendHeader(std::string* out, size_t argc) {
  out->push_back('*');
  AppendDecimal(out, argc);
  out->append("\r\n", 2);
}

void AppendBulk(std::string* out, absl::string_view arg) {
  out->push_back('$');
  AppendDecimal(out, arg.size());
  out->append("\r\n", 2);
  out->append(arg.data(), arg.size());
  out->append("\r\n", 2);
}

void AppendBulk(std::string* out, uint64_t value) {
  char digits[24];
  char* end = absl::numbers_internal::FastIntToBuffer(value, digits);
  AppendBulk(out, absl::string_view(digits, static_cast<size_t>(end - digits)));
}

// One call of the bucket script (bucket_script.h): KEYS = {key}, ARGV =
// {capacity, period_ms, cost[, "peek"]}.
void AppendBucketCall(std::string* out, const RedisScriptCall& script,
                      absl::string_view key, const Rate& rate, uint64_t cost, bool peek) {
  AppendHeader(out, peek ? 8 : 7);
  AppendBulk(out, script.verb);
  AppendBulk(out, script.first_arg);
  AppendBulk(out, "1");
  AppendBulk(out, key);
  AppendBulk(out, rate.capacity);
  AppendBulk(out, rate.period_ms);
  AppendBulk(out, cost);
  if (peek) AppendBulk(out, "peek");
}

}  // namespace

// Where a batch item's answer goes: one slot of the batch. Shared by the
// batch's operations (each holds a shared_ptr); answers the caller when the
// last item is delivered.
struct RedisBackend::Completion {
  virtual ~Completion() = default;
  // Called exactly once per operation, on the I/O thread (or the caller's
  // thread when the backend is stopping).
  virtual void Deliver(size_t index, absl::StatusOr<Decision> result) = 0;
};

namespace {

class BatchCompletion final : public RedisBackend::Completion {
 public:
  BatchCompletion(size_t n, BatchCallback done)
      : results_(n), pending_(n), done_(std::move(done)) {}
  void Deliver(size_t index, absl::StatusOr<Decision> result) override {
    if (result.ok()) {
      results_[index] = *result;
    } else {
      MutexLock lock(&mu_);
      if (error_.ok()) error_ = result.status();
    }
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    absl::Status error;
    {
      MutexLock lock(&mu_);
      error = error_;
    }
    if (error.ok()) {
      std::move(done_)(std::move(results_));
    } else {
      std::move(done_)(error);
    }
  }

 private:
  std::vector<Decision> results_;
  std::atomic<size_t> pending_;
  Mutex mu_;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  BatchCallback done_;
};

}  // namespace

// One bucket operation on its way through Redis. Always owned by exactly one
// place (a std::unique_ptr): the submit queue, a node's waiting list or a
// connection's in-flight list; its reply takes it out of that list. Whoever takes it
// out answers it, once, and frees it.
struct RedisBackend::Op {
  std::string key;
  Rate rate;
  uint64_t cost = 0;
  DecisionCallback done;                   // a single Decide: answered directly
  std::shared_ptr<Completion> completion;  // a batch item: answered through this
  // Non-empty: an all-or-nothing batch, one script call over these keys
  // (`key` is items[0].key, which routes it), answered through batch_done.
  std::vector<BucketOp> items;
  AllOrNothingCallback batch_done;
  // The bucket script's peek (nothing written): a single Peek answers through
  // peek_done; a batch item through `completion` (the hit's decision).
  bool peek = false;
  PeekCallback peek_done;
  bool dry_run = false;  // an all-or-nothing batch evaluated, not written
  // Non-empty: a plain command (admin scans), sent as is, answered through
  // raw_done. Routed to `node` when set, else by `key` (empty: any node).
  std::vector<std::string> command;
  std::string node;
  RedisReplyCallback raw_done;
  size_t index = 0;
  int64_t deadline_ms = 0;  // steady clock
  int redirects = 0;
  bool use_eval = false;  // the server lost the script (NOSCRIPT): send it whole
  std::string ask_node;   // one-shot ASK redirect target ("host:port")
  // Non-empty: single decisions (and batch items) of one node (Redis Cluster:
  // one hash slot) coalesced into one call of the each script, in queue
  // order; they travel as this op and are answered one by one from its reply.
  std::vector<std::unique_ptr<Op>> members;
  size_t route = 0;  // with members: picks the connection (PickUp)

  // The key that routes the op: every member of a coalesced call has the slot
  // of the first.
  const std::string& RoutingKey() const {
    return members.empty() ? key : members.front()->key;
  }

  // Answers with `result` (for an all-or-nothing batch only errors come here).
  // Called once, by the op's owner, which then frees it.
  void Complete(absl::StatusOr<Decision> result) {
    if (!members.empty()) {
      const absl::Status status =
          result.ok() ? absl::InternalError("one decision for a coalesced call")
                      : result.status();
      for (auto& member : members) member->Complete(status);
      members.clear();
    } else if (!command.empty()) {
      std::move(raw_done)(
          result.ok() ? absl::InternalError("decision for a command") : result.status(),
          "");
    } else if (peek_done) {
      std::move(peek_done)(result.ok() ? absl::InternalError("decision for a peek")
                                       : result.status());
    } else if (!items.empty()) {
      std::move(batch_done)(result.ok() ? absl::InternalError("bucket script answer "
                                                              "for a batch")
                                        : result.status());
    } else if (completion != nullptr) {
      completion->Deliver(index, std::move(result));
      completion.reset();
    } else {
      std::move(done)(std::move(result));
    }
  }
};

// The I/O thread: owns every connection, the slot map and the queue.
//
// A connection is a libevent bufferevent (a plain socket, or OpenSSL over
// one for rediss://: the one code path differs only in how the bufferevent
// is made) plus a hiredis redisReader for the replies; commands are
// formatted as RESP straight into one reused buffer (AppendBulk). On a
// plaintext connection that is up, inside one of the loop's callbacks, they
// are staged in the connection's `staged` and Flush() sends them with one
// send() when the callback ends; what the socket does not take, TLS, and
// the connection setup go through the bufferevent's output, which libevent
// writes when the socket is writable. (A bufferevent's output cannot be
// written from outside libevent's write callback: its start is frozen, and
// going through it costs an epoll_ctl, one more epoll round and an epoll_ctl
// per write.) Replies come in the order commands were
// sent, so each connection keeps one `pending` entry per command saying who takes its
// reply.
class RedisBackend::Loop {
 public:
  // `tls_ctx`: the TLS context for rediss:// (null for plaintext).
  Loop(RedisBackend* owner, const RedisOptions& options, SslCtxPtr tls_ctx);
  ~Loop();

  // Any thread.
  void Enqueue(std::unique_ptr<Op> op);
  void Enqueue(std::vector<std::unique_ptr<Op>> ops);

 private:
  struct Node;
  enum class State { kDown, kConnecting, kUp };
  // Who takes the reply to a command sent on a connection.
  // kHandshake: AUTH / SELECT after connecting; kReady: the PING that
  // follows them, whose reply makes the connection kUp.
  enum class ReplyTo { kOp, kNobody, kHandshake, kReady, kClusterSlots };
  struct Pending {
    ReplyTo to;
    const Op* op;  // kOp: the op (in `inflight`); else null
  };
  struct Conn {
    Loop* loop = nullptr;
    Node* node = nullptr;
    // Set while kConnecting or kUp; freed (closing the socket and the TLS
    // session) by CloseSocket.
    bufferevent* bev = nullptr;
    redisReader* reader = nullptr;
    SSL* ssl = nullptr;           // owned by bev; null for plaintext
    uint64_t generation = 0;      // bumped by each Connect and CloseSocket
    std::deque<Pending> pending;  // one per command sent, in reply order
    State state = State::kDown;
    int64_t since_ms = 0;         // when the current connect attempt started
    int64_t next_attempt_ms = 0;  // when kDown: next connect attempt
    int64_t backoff_ms = 0;
    bool was_up = false;    // for logging transitions once
    bool to_flush = false;  // in Loop::written_
    // Commands formatted since the last Flush, not yet handed to the socket
    // (plaintext and kUp only; see the class comment).
    std::string staged;
    std::deque<std::unique_ptr<Op>> inflight;  // sent, in reply order

    // Takes `op` (sent on this connection) out of `inflight`; nullptr when it
    // is not there (its connection was dropped, which answers it).
    std::unique_ptr<Op> Take(const Op* op) {
      auto it = inflight.begin();
      while (it != inflight.end() && it->get() != op) ++it;  // usually the front
      if (it == inflight.end()) return nullptr;
      std::unique_ptr<Op> taken = std::move(*it);
      inflight.erase(it);
      return taken;
    }
  };
  struct Node {
    std::string address;  // "host:port"
    RedisEndpoint endpoint;
    std::vector<std::unique_ptr<Conn>> conns;
    size_t next = 0;
    std::deque<std::unique_ptr<Op>> waiting;  // parked while a connection is being made
    // Single decisions (and batch items) for this node in queue order, not
    // sent yet: while the node has a call in flight per connection, what
    // arrives waits here and leaves as one coalesced call when a reply (or
    // a failure) frees one (Release). So the load sets the size of a call:
    // a lone decision goes at once, and under load Redis runs few large
    // calls instead of one per wake-up of the I/O thread.
    std::deque<std::unique_ptr<Op>> held;
    std::string last_error;
    // The distinct reasons connects failed for since the last successful
    // connection (at most kMaxOutageReasons): each is logged once per outage,
    // even when attempts alternate between them (e.g. a TLS alert or a reset).
    std::vector<std::string> outage_reasons;
  };

  void Run();
  static void OnWake(evutil_socket_t fd, short what, void* arg);
  static void OnTick(evutil_socket_t fd, short what, void* arg);
  static void OnRead(bufferevent* bev, void* arg);
  static void OnEvent(bufferevent* bev, short events, void* arg);
  // The socket (and TLS session) is up: sends AUTH, SELECT and PING.
  void OnTransportUp(Conn* conn);
  // The server answered the PING: the connection is usable.
  void OnConnected(Conn* conn);
  void OnDisconnected(Conn* conn, const std::string& reason);
  // Why the connection's bufferevent reported an error (socket or TLS).
  std::string ErrorText(Conn* conn, short events) const;
  void HandleReply(Conn* conn, Pending pending, ReplyPtr reply);
  void OnOpReply(Conn* conn, std::unique_ptr<Op> op, const redisReply* reply);
  void OnHandshakeReply(Conn* conn, const redisReply* reply);
  void OnClusterSlots(Conn* conn, const redisReply* reply);
  // Formats the command and appends it to the connection's output; false
  // when it could not (out of memory).
  bool Write(Conn* conn, int argc, const char** argv, const size_t* lens, ReplyTo to,
             const Op* op = nullptr);
  // Sends the command formatted in out_ on the connection: staged for
  // Flush() inside a callback (plaintext, kUp), else through the
  // bufferevent's output.
  bool WriteFormatted(Conn* conn, ReplyTo to, const Op* op);
  // Frees the connection's socket, TLS session and reader; forgets its
  // pending replies (an outstanding CLUSTER SLOTS counts as lost). The ops in
  // `inflight` stay for the caller to answer.
  void CloseSocket(Conn* conn);

  void Drain();
  void Wake();
  // Sends what was staged on each connection: one send() each, what the
  // socket does not take through the bufferevent. Called when each of the
  // loop's callbacks ends (FlushScope).
  void Flush();
  // Flushes when the callback that made it ends; while one exists, writes on
  // plaintext connections that are up are staged.
  class FlushScope {
   public:
    explicit FlushScope(Loop* loop) : loop_(loop) { ++loop_->flush_scopes_; }
    ~FlushScope() {
      if (--loop_->flush_scopes_ == 0) loop_->Flush();
    }
    FlushScope(const FlushScope&) = delete;
    FlushScope& operator=(const FlushScope&) = delete;

   private:
    Loop* const loop_;
  };
  void Tick();
  void Dispatch(std::unique_ptr<Op> op);
  Node* Route(const Op& op);
  Conn* PickUp(Node* node, size_t preferred);
  bool AnyConnecting(const Node* node) const;
  bool Send(Conn* conn, Op* op);
  bool SendAllOrNothing(Conn* conn, Op* op);
  bool SendEach(Conn* conn, Op* op);
  // Whether `op` may travel in a coalesced call: a single decision or a
  // batch item (not a single Peek, an all-or-nothing batch or a command).
  static bool Coalescable(const Op& op);
  // Sends `ops` (queued for one node, or one slot of a cluster, in queue
  // order) as coalesced calls of at most kMaxEachItems; a lone op as is.
  void DispatchGroup(std::vector<std::unique_ptr<Op>> ops);
  // Commands sent on `node`'s connections and not answered yet.
  static size_t InFlight(const Node* node);
  // Sends `node`'s held decisions (grouped by slot, in queue order) unless
  // every connection of the node has a call in flight.
  void Release(Node* node);
  // Answers the members of the coalesced call `op` from the each script's reply.
  void OnEachReply(Conn* conn, std::unique_ptr<Op> op, const redisReply* reply);
  // Answers and frees `op`; true when the reply was well-formed.
  bool OnAllOrNothingReply(std::unique_ptr<Op> op, const redisReply* reply);
  Node* NodeFor(const std::string& address);
  void Connect(Conn* conn);
  void ConnectFailed(Conn* conn, const std::string& reason);
  void Drop(Conn* conn, const std::string& reason);
  void Backoff(Conn* conn);
  void FailWaiting(Node* node, const std::string& reason);
  void MaybeRefreshSlots(int64_t now_ms);
  // Answers `op` with an error of `code` (kUnavailable: an outage;
  // kInternal: Redis answered something the script never returns).
  void Fail(std::unique_ptr<Op> op, const std::string& reason,
            absl::StatusCode code = absl::StatusCode::kUnavailable);
  void Shutdown();

  RedisBackend* const owner_;
  const RedisOptions options_;
  const std::string& name_;
  event_base* base_ = nullptr;
  event* wake_event_ = nullptr;
  event* tick_event_ = nullptr;
  int wake_fd_ = -1;

  Mutex mu_;
  std::vector<std::unique_ptr<Op>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // A wake-up was signalled and its Drain has not taken the queue yet.
  bool wake_pending_ ABSL_GUARDED_BY(mu_) = false;
  // Every node has a command in flight per connection (set by Drain): a
  // single decision enqueued now would only be held, and the next reply,
  // failure or tick drains the queue anyway, so it does not wake the thread.
  bool all_busy_ ABSL_GUARDED_BY(mu_) = false;

  const RedisScriptRegistry scripts_;  // immutable: the scripts and their digests
  const SslCtxPtr tls_ctx_;            // null: plaintext
  const std::string tls_name_;         // the name every node's certificate must carry

  // I/O thread only.
  std::vector<std::unique_ptr<Node>> nodes_;
  std::array<Node*, kRedisClusterSlots> slots_{};
  bool refresh_wanted_ = false;
  bool refresh_inflight_ = false;
  int64_t refresh_sent_ms_ = 0;
  int64_t last_refresh_ms_ = 0;
  size_t refresh_next_node_ = 0;  // index in nodes_ of the next CLUSTER SLOTS target
  bool shutting_down_ = false;
  std::vector<Conn*> written_;              // connections written to since the last Flush
  int flush_scopes_ = 0;                    // FlushScopes alive (nesting)
  std::string out_;                         // the command being formatted (RESP)
  std::vector<std::unique_ptr<Op>> spare_;  // empty; swapped with queue_ by Drain

  std::thread thread_;
};

RedisBackend::Loop::Loop(RedisBackend* owner, const RedisOptions& options,
                         SslCtxPtr tls_ctx)
    : owner_(owner),
      options_(options),
      name_(owner->name_),
      tls_ctx_(std::move(tls_ctx)),
      tls_name_(options.TlsName()) {
  base_ = event_base_new();
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  wake_event_ = event_new(base_, wake_fd_, EV_READ | EV_PERSIST, &Loop::OnWake, this);
  event_add(wake_event_, nullptr);
  tick_event_ = event_new(base_, -1, EV_PERSIST, &Loop::OnTick, this);
  const int64_t tick_ms = std::clamp<int64_t>(options_.timeout_ms / 5, 5, 50);
  timeval tv{static_cast<time_t>(tick_ms / 1000),
             static_cast<suseconds_t>((tick_ms % 1000) * 1000)};
  event_add(tick_event_, &tv);
  for (const RedisEndpoint& ep : options_.endpoints) {
    NodeFor(FormatRedisAddress(ep.host, ep.port));
  }
  thread_ = std::thread([this] { Run(); });
}

RedisBackend::Loop::~Loop() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
  thread_.join();
  event_free(wake_event_);
  event_free(tick_event_);
  event_base_free(base_);
  ::close(wake_fd_);
}

void RedisBackend::Loop::Run() {
  pthread_setname_np(pthread_self(), "traffik-redis");
  event_base_dispatch(base_);
  Shutdown();
}

void RedisBackend::Loop::Shutdown() {
  shutting_down_ = true;
  std::vector<std::unique_ptr<Op>> queued;
  {
    MutexLock lock(&mu_);
    queued.swap(queue_);
  }
  for (auto& op : queued) Fail(std::move(op), "backend is shutting down");
  for (auto& node : nodes_) {
    std::deque<std::unique_ptr<Op>> held;
    held.swap(node->held);
    for (auto& op : held) Fail(std::move(op), "backend is shutting down");
  }
  for (auto& node : nodes_) {
    for (auto& conn : node->conns) {
      if (conn->bev != nullptr) Drop(conn.get(), "backend is shutting down");
    }
    FailWaiting(node.get(), "backend is shutting down");
  }
}

void RedisBackend::Loop::Enqueue(std::unique_ptr<Op> op) {
  bool wake = false;
  {
    MutexLock lock(&mu_);
    if (!stopping_) {
      wake = !wake_pending_ && !(all_busy_ && Coalescable(*op));
      wake_pending_ = wake_pending_ || wake;
      queue_.push_back(std::move(op));
    }
  }
  if (op != nullptr) Fail(std::move(op), "backend is shutting down");
  if (wake) Wake();
}

void RedisBackend::Loop::Enqueue(std::vector<std::unique_ptr<Op>> ops) {
  bool wake = false;
  {
    MutexLock lock(&mu_);
    if (!stopping_) {
      bool coalescable = all_busy_;
      for (const auto& op : ops) coalescable = coalescable && Coalescable(*op);
      wake = !wake_pending_ && !coalescable;
      wake_pending_ = wake_pending_ || wake;
      for (auto& op : ops) queue_.push_back(std::move(op));
      ops.clear();
    }
  }
  for (auto& op : ops) Fail(std::move(op), "backend is shutting down");  // stopping
  if (wake) Wake();
}

void RedisBackend::Loop::Wake() {
  const uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof(one));
}

void RedisBackend::Loop::OnWake(evutil_socket_t fd, short /*what*/, void* arg) {
  auto* loop = static_cast<Loop*>(arg);
  const FlushScope flush(loop);
  uint64_t value;
  (void)!::read(fd, &value, sizeof(value));
  {
    MutexLock lock(&loop->mu_);
    if (loop->stopping_) {
      event_base_loopbreak(loop->base_);
      return;
    }
  }
  loop->Drain();
}

void RedisBackend::Loop::Drain() {
  // The queue keeps the capacity of an earlier drain: no reallocation as
  // callers fill it again.
  std::vector<std::unique_ptr<Op>> ops;
  ops.swap(spare_);
  {
    MutexLock lock(&mu_);
    ops.swap(queue_);
    wake_pending_ = false;
  }
  // Everything sent here leaves in one write per connection when the
  // wake-up ends (Flush): the pipelining. The single decisions join their
  // node's held ones and go out as coalesced calls when the node has room
  // (Release).
  for (auto& op : ops) {
    if (Coalescable(*op)) {
      Route(*op)->held.push_back(std::move(op));
    } else {
      Dispatch(std::move(op));
    }
  }
  ops.clear();
  spare_.swap(ops);
  bool all_busy = !shutting_down_;
  for (auto& node : nodes_) {
    Release(node.get());
    all_busy = all_busy && InFlight(node.get()) >= node->conns.size();
  }
  bool wake = false;
  {
    MutexLock lock(&mu_);
    all_busy_ = all_busy;
    // A decision enqueued since the swap may have seen the earlier all_busy_
    // and not woken us: with room now, it must not wait for a reply.
    wake = !all_busy && !queue_.empty() && !wake_pending_;
    wake_pending_ = wake_pending_ || wake;
  }
  if (wake) Wake();
}

size_t RedisBackend::Loop::InFlight(const Node* node) {
  size_t n = 0;
  for (const auto& conn : node->conns) n += conn->inflight.size();
  return n;
}

void RedisBackend::Loop::Release(Node* node) {
  if (node->held.empty() || InFlight(node) >= node->conns.size()) return;
  std::deque<std::unique_ptr<Op>> held;
  held.swap(node->held);
  // By slot in a cluster (Redis Cluster refuses a script across slots),
  // keeping queue order within each.
  std::vector<std::pair<int, std::vector<std::unique_ptr<Op>>>> groups;
  for (auto& op : held) {
    const int slot = options_.cluster ? RedisKeySlot(op->key) : 0;
    auto group = std::find_if(groups.begin(), groups.end(),
                              [slot](const auto& g) { return g.first == slot; });
    if (group == groups.end()) {
      groups.emplace_back(slot, std::vector<std::unique_ptr<Op>>());
      group = groups.end() - 1;
    }
    group->second.push_back(std::move(op));
  }
  for (auto& group : groups) DispatchGroup(std::move(group.second));
}

void RedisBackend::Loop::Flush() {
  std::vector<Conn*> unsent;
  for (Conn* conn : written_) {
    conn->to_flush = false;
    if (conn->staged.empty() || conn->bev == nullptr) continue;
    // CloseSocket empties `staged`, so the socket is the one the commands
    // were staged for.
    absl::string_view rest = conn->staged;
    evbuffer* output = bufferevent_get_output(conn->bev);
    const evutil_socket_t fd = bufferevent_getfd(conn->bev);
    // Behind output the socket has not taken yet, the commands queue there.
    if (fd >= 0 && evbuffer_get_length(output) == 0) {
      ssize_t sent;
      do {
        sent = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      } while (sent < 0 && errno == EINTR);
      // An error (a reset) is left for the bufferevent: its write of the
      // rest fails the same way and reports it through OnEvent, as before.
      if (sent > 0) rest.remove_prefix(static_cast<size_t>(sent));
    }
    if (!rest.empty() && bufferevent_write(conn->bev, rest.data(), rest.size()) != 0) {
      unsent.push_back(conn);
    }
    if (conn->staged.capacity() > kMaxKeptStagedBytes) {
      std::string().swap(conn->staged);
    } else {
      conn->staged.clear();
    }
  }
  written_.clear();
  // Out of memory: the commands' replies will never come. Dropped after the
  // loop (Drop answers ops, which may write; outside a FlushScope such
  // writes go through the bufferevent).
  for (Conn* conn : unsent) Drop(conn, "out of memory sending a command");
}

bool RedisBackend::Loop::Coalescable(const Op& op) {
  return op.members.empty() && op.command.empty() && op.items.empty() && !op.peek_done &&
         op.ask_node.empty() && !op.use_eval;
}

void RedisBackend::Loop::DispatchGroup(std::vector<std::unique_ptr<Op>> ops) {
  if (ops.size() == 1) {
    Dispatch(std::move(ops.front()));
    return;
  }
  // Every call of the group goes on one connection, so a key's hits in
  // several calls still run in queue order.
  const size_t route = absl::HashOf(ops.front()->key);
  size_t i = 0;
  while (i < ops.size()) {
    auto call = std::make_unique<Op>();
    call->members.reserve(std::min(ops.size() - i, kMaxEachItems));
    call->route = route;
    call->deadline_ms = ops[i]->deadline_ms;
    size_t key_bytes = 0;
    do {
      key_bytes += ops[i]->key.size();
      call->deadline_ms = std::min(call->deadline_ms, ops[i]->deadline_ms);
      call->members.push_back(std::move(ops[i]));
      ++i;
    } while (i < ops.size() && call->members.size() < kMaxEachItems &&
             key_bytes + ops[i]->key.size() <= kMaxEachKeyBytes);
    Dispatch(std::move(call));
  }
}

void RedisBackend::Loop::Fail(std::unique_ptr<Op> op, const std::string& reason,
                              absl::StatusCode code) {
  op->Complete(absl::Status(code, absl::StrCat(name_, ": ", reason)));
}

RedisBackend::Loop::Node* RedisBackend::Loop::NodeFor(const std::string& address) {
  for (auto& node : nodes_) {
    if (node->address == address) return node.get();
  }
  auto node = std::make_unique<Node>();
  node->address = address;
  node->endpoint = ParseRedisAddress(address);
  for (int i = 0; i < options_.pool_size; ++i) {
    auto conn = std::make_unique<Conn>();
    conn->loop = this;
    conn->node = node.get();
    node->conns.push_back(std::move(conn));
  }
  Node* raw = node.get();
  nodes_.push_back(std::move(node));
  for (auto& conn : raw->conns) Connect(conn.get());
  return raw;
}

void RedisBackend::Loop::Connect(Conn* conn) {
  ++conn->generation;
  const RedisEndpoint& endpoint = conn->node->endpoint;
  // Resolved synchronously, as hiredis did: addresses are instant, and a
  // name is looked up once per connection attempt.
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* resolved = nullptr;
  const std::string port = absl::StrCat(endpoint.port);
  if (const int rc = getaddrinfo(endpoint.host.c_str(), port.c_str(), &hints, &resolved);
      rc != 0 || resolved == nullptr) {
    ConnectFailed(conn, absl::StrCat("cannot resolve host: ",
                                     rc != 0 ? gai_strerror(rc) : "no address"));
    return;
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> addresses(resolved, &freeaddrinfo);
  // IPv4 first, as hiredis did (a name with both is usually bound on IPv4).
  const addrinfo* address = resolved;
  for (const addrinfo* a = resolved; a != nullptr; a = a->ai_next) {
    if (a->ai_family == AF_INET) {
      address = a;
      break;
    }
  }
  bufferevent* bev = nullptr;
  if (tls_ctx_ != nullptr) {
    SSL* ssl = NewRedisTlsSession(tls_ctx_.get(), options_.tls_options, tls_name_);
    if (ssl == nullptr) {
      ConnectFailed(conn, "cannot create a TLS session");
      return;
    }
    // Owns `ssl` from here (BEV_OPT_CLOSE_ON_FREE frees it with the socket).
    bev = bufferevent_openssl_socket_new(base_, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                         BEV_OPT_CLOSE_ON_FREE);
    if (bev == nullptr) {
      SSL_free(ssl);
    } else {
      // A server closing without close_notify is a closed connection, not
      // an attack on a request/response protocol with its own framing.
      bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
      conn->ssl = ssl;
    }
  } else {
    bev = bufferevent_socket_new(base_, -1, BEV_OPT_CLOSE_ON_FREE);
  }
  if (bev == nullptr) {
    ConnectFailed(conn, "cannot create a socket buffer");
    return;
  }
  conn->bev = bev;
  conn->reader = redisReaderCreate();
  conn->state = State::kConnecting;
  conn->since_ms = NowMs();
  bufferevent_setcb(bev, &Loop::OnRead, nullptr, &Loop::OnEvent, conn);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
  if (conn->reader == nullptr) {
    CloseSocket(conn);
    ConnectFailed(conn, "out of memory");
    return;
  }
  const uint64_t generation = conn->generation;
  if (bufferevent_socket_connect(bev, address->ai_addr,
                                 static_cast<int>(address->ai_addrlen)) != 0) {
    // libevent may have reported the failure through OnEvent already.
    if (conn->generation != generation) return;
    const std::string reason = evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR());
    CloseSocket(conn);
    ConnectFailed(conn, reason);
    return;
  }
  // Commands are small and latency-bound: no Nagle delay behind an
  // unacknowledged earlier write.
  if (const evutil_socket_t fd = bufferevent_getfd(bev); fd >= 0) {
    const int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
}

void RedisBackend::Loop::CloseSocket(Conn* conn) {
  ++conn->generation;
  for (const Pending& pending : conn->pending) {
    if (pending.to == ReplyTo::kClusterSlots) refresh_inflight_ = false;
  }
  conn->pending.clear();
  conn->staged.clear();  // commands for the closed socket (their ops are answered)
  if (conn->bev != nullptr) bufferevent_free(conn->bev);
  if (conn->reader != nullptr) redisReaderFree(conn->reader);
  conn->bev = nullptr;
  conn->reader = nullptr;
  conn->ssl = nullptr;
}

bool RedisBackend::Loop::Write(Conn* conn, int argc, const char** argv,
                               const size_t* lens, ReplyTo to, const Op* op) {
  out_.clear();
  AppendHeader(&out_, static_cast<size_t>(argc));
  for (int i = 0; i < argc; ++i) AppendBulk(&out_, absl::string_view(argv[i], lens[i]));
  return WriteFormatted(conn, to, op);
}

bool RedisBackend::Loop::WriteFormatted(Conn* conn, ReplyTo to, const Op* op) {
  if (flush_scopes_ > 0 && conn->ssl == nullptr && conn->state == State::kUp) {
    conn->staged.append(out_);
  } else if (bufferevent_write(conn->bev, out_.data(), out_.size()) != 0) {
    return false;
  }
  conn->pending.push_back(Pending{to, op});
  if (!conn->to_flush) {
    conn->to_flush = true;
    written_.push_back(conn);
  }
  return true;
}

void RedisBackend::Loop::Backoff(Conn* conn) {
  conn->backoff_ms =
      std::clamp<int64_t>(conn->backoff_ms * 2, kMinBackoffMs, kMaxBackoffMs);
  conn->next_attempt_ms = NowMs() + conn->backoff_ms;
}

void RedisBackend::Loop::ConnectFailed(Conn* conn, const std::string& reason) {
  Node* node = conn->node;
  conn->state = State::kDown;
  const bool new_reason =
      std::find(node->outage_reasons.begin(), node->outage_reasons.end(), reason) ==
      node->outage_reasons.end();
  if (new_reason && node->outage_reasons.size() < kMaxOutageReasons) {
    node->outage_reasons.push_back(reason);
  }
  if ((new_reason && node->last_error != reason) || conn->was_up) {
    TRAFFIK_LOG_LIMITED(absl::StrCat(name_, ": cannot connect to ", node->address, ": ",
                                     reason, "; retrying with backoff"));
  }
  conn->was_up = false;
  node->last_error = reason;
  Backoff(conn);
  if (PickUp(node, 0) == nullptr && !AnyConnecting(node)) {
    FailWaiting(node, absl::StrCat("cannot connect to ", node->address, ": ", reason));
  }
  if (options_.cluster) refresh_wanted_ = true;
}

std::string RedisBackend::Loop::ErrorText(Conn* conn, short events) const {
  if (conn->ssl != nullptr) {
    // libevent also queues bare SSL_get_error() codes (library 0), which
    // say nothing beyond the socket error handled below.
    unsigned long tls_error = 0;
    while (const unsigned long e = bufferevent_get_openssl_error(conn->bev)) {
      if (tls_error == 0 && ERR_GET_LIB(e) != 0) tls_error = e;
    }
    if (tls_error != 0 || SSL_get_verify_result(conn->ssl) != X509_V_OK) {
      return DescribeRedisTlsFailure(conn->ssl, tls_error);
    }
  }
  if ((events & BEV_EVENT_EOF) != 0) return "connection closed";
  const int error = EVUTIL_SOCKET_ERROR();
  if (error == 0) {
    return conn->ssl != nullptr && conn->state == State::kConnecting
               ? "connection closed during the TLS handshake"
               : "connection closed";
  }
  return evutil_socket_error_to_string(error);
}

void RedisBackend::Loop::OnEvent(bufferevent* bev, short events, void* arg) {
  auto* conn = static_cast<Conn*>(arg);
  Loop* loop = conn->loop;
  if (conn->bev != bev) return;
  // A lost connection may send its node's held decisions on another.
  const FlushScope flush(loop);
  if ((events & BEV_EVENT_CONNECTED) != 0) {
    if (conn->state == State::kConnecting) loop->OnTransportUp(conn);
    return;
  }
  if ((events & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) == 0) return;
  const std::string reason = loop->ErrorText(conn, events);
  if (conn->state == State::kConnecting) {
    loop->CloseSocket(conn);
    loop->ConnectFailed(conn, reason);
  } else {
    loop->OnDisconnected(conn, reason);
  }
}

void RedisBackend::Loop::OnTransportUp(Conn* conn) {
  // Still kConnecting (bounded by connect_timeout) until the PING is
  // answered: a server that takes the TCP connection or even completes the
  // TLS handshake may still refuse us (TLS 1.3 checks the client certificate
  // after the client's handshake is done; AUTH may fail), and such a
  // refusal is a failed connect, logged once per reason, not a connection
  // that flaps up and down.
  const RedisOptions& o = options_;
  if (!o.password.empty()) {
    if (o.username.empty()) {
      const char* argv[] = {"AUTH", o.password.c_str()};
      const size_t lens[] = {4, o.password.size()};
      Write(conn, 2, argv, lens, ReplyTo::kHandshake);
    } else {
      const char* argv[] = {"AUTH", o.username.c_str(), o.password.c_str()};
      const size_t lens[] = {4, o.username.size(), o.password.size()};
      Write(conn, 3, argv, lens, ReplyTo::kHandshake);
    }
  }
  if (o.db != 0 && !o.cluster) {
    const std::string db = absl::StrCat(o.db);
    const char* argv[] = {"SELECT", db.c_str()};
    const size_t lens[] = {6, db.size()};
    Write(conn, 2, argv, lens, ReplyTo::kHandshake);
  }
  const char* argv[] = {"PING"};
  const size_t lens[] = {4};
  if (!Write(conn, 1, argv, lens, ReplyTo::kReady)) {
    CloseSocket(conn);
    ConnectFailed(conn, "cannot send the connection setup");
  }
}

void RedisBackend::Loop::OnConnected(Conn* conn) {
  Node* node = conn->node;
  conn->state = State::kUp;
  // backoff_ms is reset by the first good reply, not here: a Redis that
  // accepts connections but never answers keeps backing off.
  if (!conn->was_up && !node->last_error.empty()) {
    TRAFFIK_LOG_LIMITED(absl::StrCat(name_, ": connected to ", node->address));
  }
  conn->was_up = true;
  node->last_error.clear();
  node->outage_reasons.clear();
  owner_->connected_count_.fetch_add(1, std::memory_order_relaxed);
  if (options_.cluster && last_refresh_ms_ == 0) refresh_wanted_ = true;

  // Operations parked while this node had no connection go out now.
  std::deque<std::unique_ptr<Op>> waiting;
  waiting.swap(node->waiting);
  for (auto& op : waiting) Dispatch(std::move(op));
}

void RedisBackend::Loop::OnRead(bufferevent* bev, void* arg) {
  auto* conn = static_cast<Conn*>(arg);
  Loop* loop = conn->loop;
  if (conn->bev != bev) return;
  // What the replies release (held decisions, retries) leaves when it ends.
  const FlushScope flush(loop);
  const uint64_t generation = conn->generation;
  evbuffer* input = bufferevent_get_input(bev);
  while (evbuffer_get_length(input) > 0) {
    const ev_ssize_t chunk = evbuffer_get_contiguous_space(input);
    const unsigned char* data = evbuffer_pullup(input, chunk);
    if (redisReaderFeed(conn->reader, reinterpret_cast<const char*>(data),
                        static_cast<size_t>(chunk)) != REDIS_OK) {
      loop->Drop(conn, "out of memory reading a reply");
      return;
    }
    evbuffer_drain(input, static_cast<size_t>(chunk));
  }
  while (true) {
    void* raw = nullptr;
    if (redisReaderGetReply(conn->reader, &raw) != REDIS_OK) {
      loop->Drop(conn, absl::StrCat("bad reply: ", conn->reader->errstr));
      return;
    }
    if (raw == nullptr) break;
    ReplyPtr reply(static_cast<redisReply*>(raw));
    if (conn->pending.empty()) {
      loop->Drop(conn, "a reply to no command");
      return;
    }
    const Pending pending = conn->pending.front();
    conn->pending.pop_front();
    loop->HandleReply(conn, pending, std::move(reply));
    // The handler may have dropped this connection (and its reader).
    if (conn->generation != generation) return;
  }
}

void RedisBackend::Loop::HandleReply(Conn* conn, Pending pending, ReplyPtr reply) {
  switch (pending.to) {
    case ReplyTo::kNobody:
      return;
    case ReplyTo::kHandshake:
      OnHandshakeReply(conn, reply.get());
      return;
    case ReplyTo::kReady:
      // Any answer, even an error (an ACL user without PING), shows the
      // server talks to us; AUTH and SELECT were answered before it.
      if (conn->state == State::kConnecting) OnConnected(conn);
      return;
    case ReplyTo::kClusterSlots:
      OnClusterSlots(conn, reply.get());
      return;
    case ReplyTo::kOp: {
      // Replies come in order, so this is the front of `inflight`.
      std::unique_ptr<Op> op = conn->Take(pending.op);
      // The node has room again: what is queued and held goes to Redis
      // before this reply's callers are answered, so Redis works meanwhile.
      Drain();
      if (op != nullptr) OnOpReply(conn, std::move(op), reply.get());
      return;
    }
  }
}

void RedisBackend::Loop::OnHandshakeReply(Conn* conn, const redisReply* reply) {
  if (reply->type != REDIS_REPLY_ERROR) return;
  // Redis' own text ("WRONGPASS ...", "ERR DB index is out of range"): it
  // never echoes the password.
  const std::string reason = absl::StrCat("refused the connection setup: ",
                                          absl::string_view(reply->str, reply->len));
  if (conn->state == State::kConnecting) {
    CloseSocket(conn);
    ConnectFailed(conn, reason);
  } else {
    Drop(conn, reason);
  }
}

void RedisBackend::Loop::OnDisconnected(Conn* conn, const std::string& reason) {
  if (conn->state == State::kUp) {
    owner_->connected_count_.fetch_sub(1, std::memory_order_relaxed);
  }
  conn->state = State::kDown;
  CloseSocket(conn);
  TRAFFIK_LOG_LIMITED(
      absl::StrCat(name_, ": lost connection to ", conn->node->address, ": ", reason));
  conn->node->last_error = reason;
  conn->was_up = false;
  std::deque<std::unique_ptr<Op>> lost;
  lost.swap(conn->inflight);
  for (auto& op : lost) {
    op->Complete(absl::UnavailableError(
        absl::StrCat(name_, ": lost connection to ", conn->node->address, ": ", reason)));
  }
  Backoff(conn);
  if (options_.cluster) refresh_wanted_ = true;
  Drain();
}

void RedisBackend::Loop::Drop(Conn* conn, const std::string& reason) {
  if (conn->state == State::kUp) {
    owner_->connected_count_.fetch_sub(1, std::memory_order_relaxed);
  }
  conn->state = State::kDown;
  CloseSocket(conn);
  std::deque<std::unique_ptr<Op>> dropped;
  dropped.swap(conn->inflight);
  if (conn->node->last_error != reason && !shutting_down_) {
    TRAFFIK_LOG_LIMITED(absl::StrCat(name_, ": dropping connection to ",
                                     conn->node->address, ": ", reason));
  }
  conn->node->last_error = reason;
  conn->was_up = false;
  Backoff(conn);
  for (auto& op : dropped) {
    op->Complete(absl::UnavailableError(absl::StrCat(name_, ": ", reason)));
  }
  if (options_.cluster) refresh_wanted_ = true;
  Drain();
}

void RedisBackend::Loop::FailWaiting(Node* node, const std::string& reason) {
  std::deque<std::unique_ptr<Op>> waiting;
  waiting.swap(node->waiting);
  for (auto& op : waiting) Fail(std::move(op), reason);
}

bool RedisBackend::Loop::AnyConnecting(const Node* node) const {
  for (const auto& conn : node->conns) {
    if (conn->state == State::kConnecting) return true;
  }
  return false;
}

// A live connection to `node`, starting the search at `preferred`: a key
// always maps to the same connection while it is up, so hits on one key are
// executed in the order they were sent (a batch's "one by one").
RedisBackend::Loop::Conn* RedisBackend::Loop::PickUp(Node* node, size_t preferred) {
  const size_t n = node->conns.size();
  for (size_t i = 0; i < n; ++i) {
    Conn* conn = node->conns[(preferred + i) % n].get();
    if (conn->state == State::kUp) return conn;
  }
  return nullptr;
}

RedisBackend::Loop::Node* RedisBackend::Loop::Route(const Op& op) {
  if (!options_.cluster) return nodes_.front().get();
  if (!op.ask_node.empty()) return NodeFor(op.ask_node);
  if (!op.node.empty()) return NodeFor(op.node);
  Node* node = slots_[RedisKeySlot(op.RoutingKey())];
  if (node != nullptr) return node;
  // Slot map not known yet: any reachable node; MOVED will correct us.
  for (auto& candidate : nodes_) {
    if (PickUp(candidate.get(), 0) != nullptr) return candidate.get();
  }
  return nodes_.front().get();
}

void RedisBackend::Loop::Dispatch(std::unique_ptr<Op> op) {
  if (NowMs() >= op->deadline_ms) {
    Fail(std::move(op), absl::StrCat("timed out after ", options_.timeout_ms, " ms"));
    return;
  }
  Node* node = Route(*op);
  Conn* conn = PickUp(node, op->members.empty() ? absl::HashOf(op->key) : op->route);
  if (conn == nullptr) {
    if (AnyConnecting(node)) {
      node->waiting.push_back(std::move(op));
      return;
    }
    Fail(std::move(op),
         absl::StrCat("not connected to ", node->address,
                      node->last_error.empty() ? "" : " (" + node->last_error + ")"));
    return;
  }
  if (!Send(conn, op.get())) {
    Fail(std::move(op), absl::StrCat("cannot send to ", node->address));
    return;
  }
  conn->inflight.push_back(std::move(op));
}

bool RedisBackend::Loop::Send(Conn* conn, Op* op) {
  if (!op->ask_node.empty()) {
    const char* argv[] = {"ASKING"};
    const size_t lens[] = {6};
    if (!Write(conn, 1, argv, lens, ReplyTo::kNobody)) return false;
    op->ask_node.clear();
  }
  if (!op->items.empty()) return SendAllOrNothing(conn, op);
  if (!op->members.empty()) return SendEach(conn, op);
  if (!op->command.empty()) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& arg : op->command) {
      argv.push_back(arg.data());
      lens.push_back(arg.size());
    }
    return Write(conn, static_cast<int>(argv.size()), argv.data(), lens.data(),
                 ReplyTo::kOp, op);
  }
  out_.clear();
  AppendBucketCall(&out_, scripts_.Call(RedisScriptId::kBucket, op->use_eval), op->key,
                   op->rate, op->cost, op->peek);
  return WriteFormatted(conn, ReplyTo::kOp, op);
}

bool RedisBackend::Loop::SendAllOrNothing(Conn* conn, Op* op) {
  const size_t n = op->items.size();
  const RedisScriptCall script =
      scripts_.Call(RedisScriptId::kAllOrNothing, op->use_eval);
  const std::string numkeys = absl::StrCat(n);
  std::vector<std::string> numbers;  // capacity, period, cost per item
  numbers.reserve(3 * n);
  for (const BucketOp& item : op->items) {
    numbers.push_back(absl::StrCat(item.rate.capacity));
    numbers.push_back(absl::StrCat(item.rate.period_ms));
    numbers.push_back(absl::StrCat(item.cost));
  }
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  argv.reserve(3 + 4 * n);
  lens.reserve(3 + 4 * n);
  argv.push_back(script.verb.data());
  lens.push_back(script.verb.size());
  argv.push_back(script.first_arg.data());
  lens.push_back(script.first_arg.size());
  argv.push_back(numkeys.data());
  lens.push_back(numkeys.size());
  for (const BucketOp& item : op->items) {
    argv.push_back(item.key.data());
    lens.push_back(item.key.size());
  }
  for (const std::string& number : numbers) {
    argv.push_back(number.data());
    lens.push_back(number.size());
  }
  if (op->dry_run) {
    argv.push_back("peek");
    lens.push_back(4);
  }
  return Write(conn, static_cast<int>(argv.size()), argv.data(), lens.data(),
               ReplyTo::kOp, op);
}

bool RedisBackend::Loop::SendEach(Conn* conn, Op* op) {
  // KEYS = the members' keys; ARGV = their modes ("d" decide, "p" peek, one
  // character each), then capacity, period and cost per member.
  const size_t n = op->members.size();
  const RedisScriptCall script = scripts_.Call(RedisScriptId::kEach, op->use_eval);
  out_.clear();
  AppendHeader(&out_, 3 + n + 1 + 3 * n);
  AppendBulk(&out_, script.verb);
  AppendBulk(&out_, script.first_arg);
  AppendBulk(&out_, static_cast<uint64_t>(n));
  for (const auto& member : op->members) AppendBulk(&out_, member->key);
  out_.push_back('$');
  AppendDecimal(&out_, n);
  out_.append("\r\n", 2);
  for (const auto& member : op->members) out_.push_back(member->peek ? 'p' : 'd');
  out_.append("\r\n", 2);
  for (const auto& member : op->members) {
    AppendBulk(&out_, member->rate.capacity);
    AppendBulk(&out_, member->rate.period_ms);
    AppendBulk(&out_, member->cost);
  }
  return WriteFormatted(conn, ReplyTo::kOp, op);
}

void RedisBackend::Loop::OnEachReply(Conn* conn, std::unique_ptr<Op> op,
                                     const redisReply* reply) {
  const size_t n = op->members.size();
  std::vector<RedisEachItem> items(n);
  for (size_t i = 0; i < n; ++i) {
    items[i] = {op->members[i]->rate.capacity, op->members[i]->peek};
  }
  const std::optional<std::vector<RedisEachAnswer>> answers =
      DecodeEachReply(*reply, items);
  if (!answers) {
    Fail(std::move(op), "unexpected reply to the bucket script",
         absl::StatusCode::kInternal);
    return;
  }
  conn->backoff_ms = 0;
  for (size_t i = 0; i < n; ++i) {
    std::unique_ptr<Op> member = std::move(op->members[i]);
    const RedisEachAnswer* answer = &(*answers)[i];
    if (answer->decision) {
      member->Complete(*answer->decision);
    } else {
      // What this item's own call would have answered.
      Fail(std::move(member),
           absl::StrCat(conn->node->address, " answered: ", answer->error),
           IsScriptFault(answer->error) ? absl::StatusCode::kInternal
                                        : absl::StatusCode::kUnavailable);
    }
  }
  op->members.clear();
}

bool RedisBackend::Loop::OnAllOrNothingReply(std::unique_ptr<Op> op,
                                             const redisReply* reply) {
  std::optional<AllOrNothingResult> result = DecodeAllOrNothingReply(*reply, op->items);
  if (!result) {
    Fail(std::move(op), "unexpected reply to the all-or-nothing bucket script",
         absl::StatusCode::kInternal);
    return false;
  }
  std::move(op->batch_done)(*std::move(result));
  return true;
}

void RedisBackend::Loop::OnOpReply(Conn* conn, std::unique_ptr<Op> op,
                                   const redisReply* reply) {
  Loop* loop = this;
  if (reply->type == REDIS_REPLY_ERROR) {
    const absl::string_view error(reply->str, reply->len);
    if (RedisScriptRegistry::ShouldRetryWithEval(error, op->use_eval)) {
      // This node restarted, flushed its scripts or never saw them (a new
      // cluster node): EVAL loads the script there, so later EVALSHAs hit.
      op->use_eval = true;
      loop->Dispatch(std::move(op));
      return;
    }
    if (!op->members.empty() &&
        (absl::StartsWith(error, "ASK ") || absl::StartsWith(error, "TRYAGAIN"))) {
      // A slot in migration: its keys may be split between two nodes, which
      // a multi-key call cannot follow. Nothing ran (the each script never
      // stops half-way), so the decisions go again one by one, each
      // answered as its own call is.
      std::vector<std::unique_ptr<Op>> members = std::move(op->members);
      op->members.clear();
      for (auto& member : members) loop->Dispatch(std::move(member));
      return;
    }
    if (loop->options_.cluster) {
      std::optional<RedisRedirect> redirect =
          ParseRedisRedirect(error, conn->node->endpoint.host);
      if (redirect && ++op->redirects <= kMaxRedirects) {
        if (redirect->moved) {
          loop->slots_[redirect->slot] = loop->NodeFor(redirect->address);
          loop->refresh_wanted_ = true;
        } else {
          op->ask_node = std::move(redirect->address);
        }
        loop->Dispatch(std::move(op));
        return;
      }
    }
    if (absl::StartsWith(error, "CLUSTERDOWN") || absl::StartsWith(error, "TRYAGAIN")) {
      loop->refresh_wanted_ = true;
    }
    loop->Fail(std::move(op), absl::StrCat(conn->node->address, " answered: ", error),
               IsScriptFault(error) ? absl::StatusCode::kInternal
                                    : absl::StatusCode::kUnavailable);
    return;
  }
  if (!op->items.empty()) {
    if (loop->OnAllOrNothingReply(std::move(op), reply)) conn->backoff_ms = 0;
    return;
  }
  if (!op->members.empty()) {
    loop->OnEachReply(conn, std::move(op), reply);
    return;
  }
  if (!op->command.empty()) {
    conn->backoff_ms = 0;
    std::move(op->raw_done)(reply, conn->node->endpoint.host);
    return;
  }
  if (op->peek) {
    const std::optional<PeekResult> p = DecodePeekReply(*reply, op->rate.capacity);
    if (!p) {
      loop->Fail(std::move(op), "unexpected reply to the bucket script's peek",
                 absl::StatusCode::kInternal);
      return;
    }
    conn->backoff_ms = 0;
    if (op->peek_done) {
      std::move(op->peek_done)(*p);
    } else {
      op->Complete(p->hit);
    }
    return;
  }
  const std::optional<Decision> d = DecodeDecisionReply(*reply, op->rate.capacity);
  if (!d) {
    loop->Fail(std::move(op), "unexpected reply to the bucket script",
               absl::StatusCode::kInternal);
    return;
  }
  conn->backoff_ms = 0;
  op->Complete(*d);
}

void RedisBackend::Loop::OnClusterSlots(Conn* conn, const redisReply* reply) {
  Loop* loop = this;
  loop->refresh_inflight_ = false;
  const std::optional<std::vector<RedisSlotRange>> ranges =
      ParseClusterSlots(*reply, conn->node->endpoint.host);
  if (!ranges) return;
  loop->last_refresh_ms_ = NowMs();
  for (const RedisSlotRange& range : *ranges) {
    Node* node = loop->NodeFor(range.address);
    for (int s = range.first; s <= range.last; ++s) loop->slots_[s] = node;
  }
}

void RedisBackend::Loop::MaybeRefreshSlots(int64_t now_ms) {
  if (!options_.cluster) return;
  if (refresh_inflight_ && now_ms - refresh_sent_ms_ > 4 * options_.timeout_ms) {
    refresh_inflight_ = false;  // the node never answered; ask another
  }
  if (refresh_inflight_) return;
  if (!refresh_wanted_ && now_ms - last_refresh_ms_ < kSlotRefreshIntervalMs) return;
  // Ask a different node each time so one stale node cannot pin the map.
  const size_t start = refresh_next_node_;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node* node = nodes_[(start + i) % nodes_.size()].get();
    Conn* conn = PickUp(node, 0);
    if (conn == nullptr) continue;
    const char* argv[] = {"CLUSTER", "SLOTS"};
    const size_t lens[] = {7, 5};
    if (Write(conn, 2, argv, lens, ReplyTo::kClusterSlots)) {
      refresh_inflight_ = true;
      refresh_wanted_ = false;
      refresh_sent_ms_ = now_ms;
      refresh_next_node_ = (start + i + 1) % nodes_.size();
      return;
    }
  }
}

void RedisBackend::Loop::OnTick(evutil_socket_t /*fd*/, short /*what*/, void* arg) {
  Loop* loop = static_cast<Loop*>(arg);
  const FlushScope flush(loop);
  loop->Tick();
}

void RedisBackend::Loop::Tick() {
  const int64_t now = NowMs();
  for (size_t n = 0; n < nodes_.size(); ++n) {
    Node* node = nodes_[n].get();
    for (auto& c : node->conns) {
      Conn* conn = c.get();
      switch (conn->state) {
        case State::kUp:
          if (!conn->inflight.empty() && conn->inflight.front()->deadline_ms <= now) {
            Drop(conn, absl::StrCat("no reply within ", options_.timeout_ms, " ms"));
          }
          break;
        case State::kConnecting:
          if (now - conn->since_ms >= options_.connect_timeout_ms) {
            Drop(conn, absl::StrCat("connect timed out after ",
                                    options_.connect_timeout_ms, " ms"));
          }
          break;
        case State::kDown:
          if (now >= conn->next_attempt_ms) Connect(conn);
          break;
      }
    }
    // Parked operations never outlive their deadline.
    while (!node->waiting.empty() && node->waiting.front()->deadline_ms <= now) {
      std::unique_ptr<Op> op = std::move(node->waiting.front());
      node->waiting.pop_front();
      Fail(std::move(op), absl::StrCat("no connection to ", node->address, " within ",
                                       options_.timeout_ms, " ms"));
    }
    if (PickUp(node, 0) == nullptr && !AnyConnecting(node) && !node->waiting.empty()) {
      FailWaiting(node, absl::StrCat("not connected to ", node->address));
    }
    while (!node->held.empty() && node->held.front()->deadline_ms <= now) {
      std::unique_ptr<Op> op = std::move(node->held.front());
      node->held.pop_front();
      Fail(std::move(op), absl::StrCat("timed out after ", options_.timeout_ms, " ms"));
    }
  }
  Drain();
  MaybeRefreshSlots(now);
}

absl::StatusOr<std::unique_ptr<RedisBackend>> RedisBackend::Create(RedisOptions options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("a Redis backend needs at least one endpoint");
  }
  if (!options.cluster && options.endpoints.size() != 1) {
    return absl::InvalidArgumentError(
        "a standalone Redis backend takes exactly one endpoint");
  }
  if (options.pool_size < 1 || options.timeout_ms < 1 || options.connect_timeout_ms < 1) {
    return absl::InvalidArgumentError(
        "pool_size, timeout and connect_timeout must be >= 1");
  }
  SslCtxPtr tls_ctx;
  if (options.tls) {
    absl::StatusOr<SslCtxPtr> ctx = NewRedisTlsContext(options.tls_options);
    if (!ctx.ok()) {
      return absl::Status(ctx.status().code(),
                          absl::StrCat(options.Name(), ": tls.", ctx.status().message()));
    }
    tls_ctx = *std::move(ctx);
    if (options.tls_options.insecure_skip_verify) {
      TRAFFIK_LOG_LIMITED(absl::StrCat(
          options.Name(),
          ": WARNING: tls.insecure_skip_verify is set: the Redis servers' certificates "
          "and names are NOT verified (encrypted, but anyone on the path can "
          "impersonate them)"));
    }
  }
  // Writing to a socket whose peer is gone raises SIGPIPE, which would kill
  // the process. Ignore it unless the program installed a handler.
  struct sigaction current {};
  if (sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
    signal(SIGPIPE, SIG_IGN);
  }
  std::unique_ptr<RedisBackend> backend(new RedisBackend(std::move(options)));
  backend->loop_ =
      std::make_unique<Loop>(backend.get(), backend->options_, std::move(tls_ctx));
  return backend;
}

RedisBackend::RedisBackend(RedisOptions options)
    : options_(std::move(options)), name_(options_.Name()) {}

RedisBackend::~RedisBackend() { loop_.reset(); }

void RedisBackend::Decide(absl::string_view key, const Rate& rate, uint64_t cost,
                          DecisionCallback done) {
  auto op = std::make_unique<Op>();
  op->key.assign(key.data(), key.size());
  op->rate = rate;
  op->cost = cost;
  op->done = std::move(done);
  op->deadline_ms = NowMs() + options_.timeout_ms;
  loop_->Enqueue(std::move(op));
}

void RedisBackend::DecideAllOrNothing(absl::Span<const BucketOp> ops,
                                      AllOrNothingCallback done) {
  if (ops.empty()) {
    AllOrNothingResult empty;
    empty.applied = true;
    std::move(done)(std::move(empty));
    return;
  }
  if (options_.cluster) {
    // One script runs on one node, over keys of one slot. Bucket keys share
    // a slot when they share the identifier (the hash tag, see engine/key.h).
    const int slot = RedisKeySlot(ops[0].key);
    for (size_t i = 1; i < ops.size(); ++i) {
      if (const int other = RedisKeySlot(ops[i].key); other != slot) {
        std::move(done)(WithReason(
            absl::FailedPreconditionError(absl::StrCat(
                name_,
                ": an all_or_nothing batch on Redis Cluster must keep its keys in one "
                "hash slot, i.e. use one identifier; items 0 and ",
                i, " are in slots ", slot, " and ", other)),
            "ALL_OR_NOTHING_SPANS_SLOTS"));
        return;
      }
    }
  }
  auto op = std::make_unique<Op>();
  op->key = ops[0].key;
  op->items.assign(ops.begin(), ops.end());
  op->batch_done = std::move(done);
  op->dry_run =
      std::all_of(ops.begin(), ops.end(), [](const BucketOp& item) { return item.peek; });
  op->deadline_ms = NowMs() + options_.timeout_ms;
  loop_->Enqueue(std::move(op));
}

void RedisBackend::DecideBatch(absl::Span<const BucketOp> ops, BatchCallback done) {
  if (ops.empty()) {
    std::move(done)(std::vector<Decision>());
    return;
  }
  auto completion = std::make_shared<BatchCompletion>(ops.size(), std::move(done));
  const int64_t deadline = NowMs() + options_.timeout_ms;
  std::vector<std::unique_ptr<Op>> batch;
  batch.reserve(ops.size());
  for (size_t i = 0; i < ops.size(); ++i) {
    auto op = std::make_unique<Op>();
    op->key = ops[i].key;
    op->rate = ops[i].rate;
    op->cost = ops[i].cost;
    op->peek = ops[i].peek;
    op->completion = completion;
    op->index = i;
    op->deadline_ms = deadline;
    batch.push_back(std::move(op));
  }
  loop_->Enqueue(std::move(batch));
}

void RedisBackend::Peek(BackendPartition* /*partition*/, absl::string_view key,
                        const Rate& rate, uint64_t cost, PeekCallback done) {
  auto op = std::make_unique<Op>();
  op->key.assign(key.data(), key.size());
  op->rate = rate;
  op->cost = cost;
  op->peek = true;
  op->peek_done = std::move(done);
  op->deadline_ms = NowMs() + options_.timeout_ms;
  loop_->Enqueue(std::move(op));
}

void RedisBackend::Reset(BackendPartition* /*partition*/, BucketSelector selector,
                         CountCallback done) {
  // Each command of the scan is an op on the I/O loop, and each next command
  // is sent from the previous one's reply: nothing here waits.
  const int64_t timeout_ms = options_.timeout_ms;
  Loop* loop = loop_.get();
  RedisCommandSink sink = [loop, timeout_ms](RedisCommand command,
                                             RedisReplyCallback reply) {
    auto op = std::make_unique<Op>();
    if (command.keyed && command.args.size() > 1) op->key = command.args[1];
    op->command = std::move(command.args);
    op->node = std::move(command.node);
    op->raw_done = std::move(reply);
    op->deadline_ms = NowMs() + timeout_ms;
    loop->Enqueue(std::move(op));
  };
  RedisKeyScan::Run(std::move(sink), options_.cluster, std::move(selector),
                    std::move(done));
}

}  // namespace traffik
