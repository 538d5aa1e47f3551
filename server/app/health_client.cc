#include "app/health_client.h"

#include "traffik/client.h"

namespace traffik {

absl::StatusOr<bool> CheckHealth(const std::string& address, const std::string& service,
                                 std::chrono::milliseconds timeout,
                                 const std::optional<HealthCheckTls>& tls) {
  ClientOptions options;
  options.target = address;
  options.deadline = timeout;
  options.short_circuit_max_keys = 0;
  if (tls) {
    options.tls = ClientTlsOptions{.ca_file = tls->ca_file,
                                   .cert_file = tls->cert_file,
                                   .key_file = tls->key_file,
                                   .server_name = tls->server_name};
  }
  absl::StatusOr<std::shared_ptr<Client>> client = Client::Create(options);
  if (!client.ok()) return client.status();
  return (*client)->Healthy(service);
}

}  // namespace traffik
