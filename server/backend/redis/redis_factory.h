#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "backend/redis/redis_options.h"
#include "backend/registry.h"
#include "yaml/yaml_reader.h"

namespace traffik {

// The factory of the Redis backend: `redis://`, `redis+cluster://` and over
// TLS `rediss://`, `rediss+cluster://`. Its settings are the URL plus the
// tenant's `redis:` map (timeout, connect_timeout, pool_size, username,
// password_env; the password is read from the environment when the settings
// are parsed; tls: {ca_file, cert_file, key_file, server_name,
// insecure_skip_verify}, its files loaded and checked when parsed). Tenants with equal
// options share one RedisBackend; a reload keeps it (and its connections) while a
// tenant's options are unchanged.
std::shared_ptr<const BackendFactory> RedisBackendFactory();

// The options a tenant's backend spec gives (what the factory's Parse
// checks), errors in the configuration's form.
absl::StatusOr<RedisOptions> ParseRedisSpec(const BackendSpec& spec,
                                            const YamlReader& reader);

}  // namespace traffik
