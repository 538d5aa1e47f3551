#include "idle_connections.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/create_channel_posix.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"

namespace traffik::bench {
namespace {

// Served by every gRPC server with the default health service (traffikd,
// the no-op server); an empty request asks about the whole server.
constexpr char kHealthCheckMethod[] = "/grpc.health.v1.Health/Check";

absl::StatusOr<sockaddr_in> ParseIpv4Target(const std::string& target) {
  const size_t colon = target.rfind(':');
  uint32_t port = 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  if (colon == std::string::npos ||
      inet_pton(AF_INET, target.substr(0, colon).c_str(), &address.sin_addr) != 1 ||
      !absl::SimpleAtoi(target.substr(colon + 1), &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("target must be IPV4:PORT, e.g. 127.0.0.1:50051, not \"",
                     target.substr(0, 64), "\""));
  }
  address.sin_port = htons(static_cast<uint16_t>(port));
  return address;
}

std::string AddressText(const in_addr& address) {
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &address, text, sizeof(text));
  return text;
}

absl::Status ErrnoStatus(const std::string& what, int error) {
  std::string message = absl::StrCat(what, ": ", std::strerror(error));
  switch (error) {
    case EMFILE:
    case ENFILE:
      return absl::ResourceExhaustedError(
          absl::StrCat(message, " (raise the open-file limit: ulimit -n)"));
    case EADDRNOTAVAIL:
    case EADDRINUSE:
      return absl::ResourceExhaustedError(absl::StrCat(
          message, " (out of ephemeral ports: spread over more source addresses)"));
    default:
      return absl::UnavailableError(message);
  }
}

// A connected TCP socket to `to`, bound to `from` first when given (the
// port is chosen at connect time, so each (source, destination) pair has the
// whole ephemeral range).
absl::StatusOr<int> Connect(const sockaddr_in& to, const in_addr* from) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("socket", errno);
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (from != nullptr) {
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr = *from;
    if (bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof(local)) != 0) {
      const int error = errno;
      close(fd);
      return ErrnoStatus(absl::StrCat("bind ", AddressText(*from)), error);
    }
  }
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof(to)) != 0) {
    const int error = errno;
    close(fd);
    return ErrnoStatus("connect", error);
  }
  return fd;
}

// One unary health check on `channel`; the answer's bytes are not parsed (the
// status says whether the connection carried a call).
grpc::Status CallOnce(const std::shared_ptr<grpc::Channel>& channel,
                      grpc::CompletionQueue& cq, std::chrono::milliseconds deadline) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + deadline);
  grpc::Slice empty("", 0);
  const grpc::ByteBuffer request(&empty, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&context, kHealthCheckMethod, request, &cq);
  call->StartCall();
  call->Finish(&response, &status, &status);
  void* tag = nullptr;
  bool ok = false;
  if (!cq.Next(&tag, &ok) || tag != &status) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "completion queue shut down");
  }
  return status;
}

// Runs `work(index, cq)` for index = thread, thread + threads, ... on
// `threads` threads, each with its own completion queue, until every index is
// done or `work` returns false.
template <typename Work>
void ForEachConnection(int count, int threads, Work work) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      grpc::CompletionQueue cq;
      for (int i = t; i < count && !stop.load(std::memory_order_relaxed); i += threads) {
        if (!work(i, cq)) stop.store(true, std::memory_order_relaxed);
      }
      cq.Shutdown();
      void* tag = nullptr;
      bool ok = false;
      while (cq.Next(&tag, &ok)) {
      }
    });
  }
  for (std::thread& worker : workers) worker.join();
}

}  // namespace

absl::StatusOr<std::unique_ptr<IdleConnections>> IdleConnections::Open(
    const IdleConnectionOptions& options) {
  if (options.connections < 1 || options.connections > kMaxIdleConnections) {
    return absl::InvalidArgumentError(
        absl::StrCat("connections must be 1..", kMaxIdleConnections));
  }
  if (options.threads < 1 || options.threads > 256) {
    return absl::InvalidArgumentError("threads must be 1..256");
  }
  absl::StatusOr<sockaddr_in> to = ParseIpv4Target(options.target);
  if (!to.ok()) return to.status();
  std::unique_ptr<IdleConnections> held(new IdleConnections(options));
  held->channels_.resize(options.connections);
  absl::Mutex mu;
  absl::Status first_error;
  const int threads = std::min(options.threads, options.connections);
  ForEachConnection(options.connections, threads, [&](int i, grpc::CompletionQueue& cq) {
    const in_addr* from =
        options.sources.empty() ? nullptr : &options.sources[i % options.sources.size()];
    const std::string from_text = from == nullptr ? "" : " from " + AddressText(*from);
    absl::StatusOr<int> fd = Connect(*to, from);
    absl::Status error;
    if (!fd.ok()) {
      error = fd.status();
    } else {
      std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomInsecureChannelFromFd(
          options.target, *fd, grpc::ChannelArguments());
      const grpc::Status status = CallOnce(channel, cq, options.call_deadline);
      if (status.ok()) {
        held->channels_[i] = std::move(channel);
        return true;
      }
      error = absl::UnavailableError(absl::StrCat("call: ", status.error_code(), " ",
                                                  status.error_message().substr(0, 200)));
    }
    absl::MutexLock lock(&mu);
    if (first_error.ok()) {
      first_error =
          absl::Status(error.code(), absl::StrCat("connection ", i + 1, " of ",
                                                  options.connections, from_text, " to ",
                                                  options.target, ": ", error.message()));
    }
    return false;
  });
  if (!first_error.ok()) return first_error;
  return held;
}

int IdleConnections::Verify() {
  std::atomic<int> answered{0};
  ForEachConnection(size(), std::min(options_.threads, size()),
                    [&](int i, grpc::CompletionQueue& cq) {
                      if (CallOnce(channels_[i], cq, options_.call_deadline).ok()) {
                        answered.fetch_add(1, std::memory_order_relaxed);
                      }
                      return true;
                    });
  return answered.load();
}

IdleConnections::~IdleConnections() = default;

absl::StatusOr<std::vector<in_addr>> AddressRange(const std::string& first, int count) {
  in_addr address{};
  if (inet_pton(AF_INET, first.c_str(), &address) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an IPv4 address: \"", first.substr(0, 64), "\""));
  }
  const uint32_t host = ntohl(address.s_addr);
  if (count < 1 || (host & 0xff) + count - 1 > 254) {
    return absl::InvalidArgumentError(absl::StrCat(count, " source addresses from ",
                                                   first, " pass the last octet's 254"));
  }
  std::vector<in_addr> addresses(count);
  for (int i = 0; i < count; ++i) addresses[i].s_addr = htonl(host + i);
  return addresses;
}

}  // namespace traffik::bench
