// The public entry points of traffik/client.h that are not per-implementation.

#include "traffik/client.h"

#include <memory>
#include <utility>

#include "client_impl.h"

namespace traffik {

absl::StatusOr<std::shared_ptr<Client>> Client::Create(ClientOptions options) {
  if (absl::Status valid = client_internal::ValidateOptions(options); !valid.ok()) {
    return valid;
  }
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel =
      client_internal::MakeChannel(options);
  if (!channel.ok()) return channel.status();
  return std::shared_ptr<Client>(
      client_internal::ClientImpl::Make(std::move(options), *std::move(channel)));
}

std::future<absl::StatusOr<ThrottleResult>> Client::CheckFuture(
    const ThrottleRequest& request, std::optional<FailurePolicy> policy) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<ThrottleResult>>>();
  std::future<absl::StatusOr<ThrottleResult>> future = promise->get_future();
  CheckAsync(
      request,
      [promise](absl::StatusOr<ThrottleResult> result) {
        promise->set_value(std::move(result));
      },
      policy);
  return future;
}

}  // namespace traffik
