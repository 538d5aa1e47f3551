// traffik_noop_server: traffik.v1.ThrottleService and
// envoy.service.ratelimit.v3.RateLimitService on the same gRPC stack as
// traffikd (callback API, health service, reflection, SO_REUSEPORT off) that
// answers every call immediately with zero responses (ShouldRateLimit: an
// empty RateLimitResponse): the ceiling a real decision cannot beat on the
// same machine.
//
//   traffik_noop_server [--listen HOST:PORT]   (default 127.0.0.1:0)
//
// Prints "noop: listening grpc=HOST:PORT" on stderr once serving; exits 0 on
// SIGTERM or SIGINT.
#include <pthread.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "traffik/v1/throttle.grpc.pb.h"

namespace {

class NoopService final : public traffik::v1::ThrottleService::CallbackService {
 public:
  grpc::ServerUnaryReactor* ShouldThrottle(
      grpc::CallbackServerContext* context,
      const traffik::v1::ShouldThrottleRequest* /*request*/,
      traffik::v1::ShouldThrottleResponse* /*response*/) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }

  grpc::ServerUnaryReactor* ShouldThrottleBatch(
      grpc::CallbackServerContext* context,
      const traffik::v1::ShouldThrottleBatchRequest* request,
      traffik::v1::ShouldThrottleBatchResponse* response) override {
    response->mutable_responses()->Reserve(request->requests_size());
    for (int i = 0; i < request->requests_size(); ++i) response->add_responses();
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

class NoopEnvoyService final
    : public envoy::service::ratelimit::v3::RateLimitService::CallbackService {
 public:
  grpc::ServerUnaryReactor* ShouldRateLimit(
      grpc::CallbackServerContext* context,
      const envoy::service::ratelimit::v3::RateLimitRequest* /*request*/,
      envoy::service::ratelimit::v3::RateLimitResponse* /*response*/) override {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

std::string HostOf(const std::string& address) {
  const size_t colon = address.rfind(':');
  return colon == std::string::npos ? address : address.substr(0, colon);
}

void Usage(FILE* out) {
  std::fputs(
      "usage: traffik_noop_server [--listen HOST:PORT]\n"
      "  A traffik.v1.ThrottleService that answers zero responses immediately.\n"
      "  --listen   gRPC address (default 127.0.0.1:0 = a free port)\n",
      out);
}

}  // namespace

int main(int argc, char** argv) {
  // As traffikd does: the same gRPC stack, the same settings.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  std::string listen = "127.0.0.1:0";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      Usage(stdout);
      return 0;
    }
    if (arg == "--listen" && i + 1 < argc) {
      listen = argv[++i];
    } else if (arg.rfind("--listen=", 0) == 0) {
      listen = arg.substr(std::strlen("--listen="));
    } else {
      std::fprintf(stderr, "noop: unknown or incomplete argument '%s'\n", arg.c_str());
      Usage(stderr);
      return 2;
    }
  }

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // The same builder settings as traffikd (server/app/server.cc).
  NoopService service;
  NoopEnvoyService envoy_service;
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&service);
  builder.RegisterService(&envoy_service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "noop: cannot listen for gRPC on %s\n", listen.c_str());
    return 1;
  }
  server->GetHealthCheckService()->SetServingStatus(true);
  std::fprintf(stderr, "noop: listening grpc=%s:%d\n", HostOf(listen).c_str(), port);
  std::fflush(stderr);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::fprintf(stderr, "noop: received %s, stopping\n",
               signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  server->Wait();
  return 0;
}
