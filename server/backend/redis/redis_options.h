#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace traffik {

struct RedisEndpoint {
  std::string host;  // name or address; IPv6 without brackets
  int port = 6379;
  bool operator==(const RedisEndpoint&) const = default;
};

// Where and how to reach one Redis (or one Redis Cluster). Built from a
// tenant's `backend:` URL plus its optional `redis:` settings map.
// Accepted range of `timeout` and `connect_timeout` (milliseconds): a
// timeout beyond a minute only hides an outage, and the I/O loop's timers
// need a bounded value.
inline constexpr int64_t kMinRedisTimeoutMs = 1;
inline constexpr int64_t kMaxRedisTimeoutMs = 60'000;

// TLS to Redis (`rediss://`, `rediss+cluster://`), from the tenant's
// `redis.tls` map. Paths are read when the backend starts (and checked when
// the configuration is loaded).
struct RedisTlsOptions {
  // PEM CA bundle that signs the server's chain; empty: the system trust store.
  std::string ca_file;
  // PEM client certificate chain and key, for servers with tls-auth-clients;
  // both or neither.
  std::string cert_file;
  std::string key_file;
  // The name (DNS name or IP address) the server's certificate must carry;
  // empty: the host of the URL (for a cluster, the first seed's host: every
  // node, including those learnt from CLUSTER SLOTS and MOVED, is checked
  // against this one name).
  std::string server_name;
  // Skips verifying the chain and the name (encryption without
  // authentication; logs a warning when the backend starts).
  bool insecure_skip_verify = false;

  bool operator==(const RedisTlsOptions&) const = default;
};

struct RedisOptions {
  bool cluster = false;                  // redis+cluster://: endpoints are seeds
  bool tls = false;                      // rediss://, rediss+cluster://
  RedisTlsOptions tls_options;           // used when `tls`
  std::vector<RedisEndpoint> endpoints;  // >= 1; exactly 1 unless cluster
  std::string username;                  // empty: AUTH with the password only
  std::string password;                  // empty: no AUTH
  int db = 0;                            // SELECT; always 0 for a cluster
  int64_t timeout_ms = 250;              // per command, send to reply
  int64_t connect_timeout_ms = 1000;     // per connection attempt
  int pool_size = 2;                     // connections per Redis node, >= 1

  // The name each server's certificate is checked against (TLS only):
  // tls_options.server_name, else the first endpoint's host.
  std::string TlsName() const;

  // "redis://host:port/db" or "redis+cluster://h1:p1,h2:p2" (rediss... with
  // TLS): for logs,
  // metrics and error messages. Never contains credentials.
  std::string Name() const;

  // Everything that makes two tenants' settings share one backend instance
  // (includes credentials; never log it).
  std::string IdentityKey() const;

  bool operator==(const RedisOptions&) const = default;
};

// Parses `redis://[[user]:password@]host[:port][/db]` or
// `redis+cluster://[[user]:password@]host[:port][,host[:port]...]`, and the
// same with `rediss` (TLS, default settings).
// Port defaults to 6379, db to 0; IPv6 hosts in brackets ("[::1]:6379");
// user and password may be percent-encoded. Errors (kInvalidArgument) name
// the problem without echoing a password.
absl::StatusOr<RedisOptions> ParseRedisUrl(absl::string_view url);

}  // namespace traffik
