// A minimal gRPC client for traffikd: one ShouldThrottle call, printed.
//
//   traffik_quickstart [--target HOST:PORT] [--tenant NAME] [--cost N]
//                      [--limit N --period-ms MS] [credential flags]
//                      THROTTLE_UID IDENTIFIER
// (credential flags: credential_flags.h, e.g. --tls-ca ca.crt --api-key-file key)
//
// Exit code: 0 allowed, 1 throttled, 2 error.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "credential_flags.h"
#include "grpcpp/grpcpp.h"
#include "traffik/v1/throttle.grpc.pb.h"

int main(int argc, char** argv) {
  std::string target = "127.0.0.1:50051";
  traffik::v1::ShouldThrottleRequest request;
  std::vector<std::string> positional;
  traffik_examples::CredentialFlags credentials;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "flag %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (traffik_examples::TakeCredentialFlag(arg, value, credentials)) {
      continue;
    } else if (arg == "--target") {
      target = value();
    } else if (arg == "--tenant") {
      request.set_tenant(value());
    } else if (arg == "--cost") {
      request.set_cost(static_cast<uint32_t>(std::strtoul(value().c_str(), nullptr, 10)));
    } else if (arg == "--limit") {
      request.mutable_spec()->set_limit(std::strtoull(value().c_str(), nullptr, 10));
    } else if (arg == "--period-ms") {
      request.mutable_spec()->set_period_ms(std::strtoull(value().c_str(), nullptr, 10));
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2) {
    std::fprintf(stderr,
                 "usage: %s [--target HOST:PORT] [--tenant NAME] [--cost N] "
                 "[--limit N --period-ms MS] %s THROTTLE_UID IDENTIFIER\n",
                 argv[0], traffik_examples::kCredentialUsage);
    return 2;
  }
  request.set_throttle_uid(positional[0]);
  request.set_identifier(positional[1]);

  std::shared_ptr<grpc::ChannelCredentials> channel_credentials =
      grpc::InsecureChannelCredentials();
  grpc::ChannelArguments args;
  if (credentials.tls) {
    grpc::SslCredentialsOptions ssl;
    if (!credentials.ca_file.empty()) {
      ssl.pem_root_certs = traffik_examples::ReadFileOrExit(credentials.ca_file, argv[0]);
    }
    if (!credentials.cert_file.empty()) {
      ssl.pem_cert_chain =
          traffik_examples::ReadFileOrExit(credentials.cert_file, argv[0]);
      ssl.pem_private_key =
          traffik_examples::ReadFileOrExit(credentials.key_file, argv[0]);
    }
    if (!credentials.server_name.empty())
      args.SetSslTargetNameOverride(credentials.server_name);
    channel_credentials = grpc::SslCredentials(ssl);
  }
  const std::string api_key = traffik_examples::ApiKeyOrExit(credentials, argv[0]);
  auto stub = traffik::v1::ThrottleService::NewStub(
      grpc::CreateCustomChannel(target, channel_credentials, args));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (!api_key.empty()) context.AddMetadata("authorization", "Bearer " + api_key);
  traffik::v1::ShouldThrottleResponse response;
  const grpc::Status status = stub->ShouldThrottle(&context, request, &response);
  if (!status.ok()) {
    std::fprintf(stderr, "error: %d %s\n", static_cast<int>(status.error_code()),
                 status.error_message().c_str());
    return 2;
  }
  std::printf("%s wait_ms=%llu limit=%llu remaining=%llu reset_ms=%llu\n",
              response.wait_ms() == 0 ? "allowed" : "throttled",
              static_cast<unsigned long long>(response.wait_ms()),
              static_cast<unsigned long long>(response.limit()),
              static_cast<unsigned long long>(response.remaining()),
              static_cast<unsigned long long>(response.reset_ms()));
  return response.wait_ms() == 0 ? 0 : 1;
}
