#pragma once

// Helpers for the reload tests: an in-process Server and single decisions.

#include <chrono>
#include <future>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "app/server.h"
#include "bucket/token_bucket.h"
#include "config/config.h"
#include "engine/engine.h"
#include "gtest/gtest.h"

namespace traffik::reload_test {

// Parses `yaml` (as "test.yaml"), listening on a free loopback port, metrics off.
inline Config MustParse(std::string_view yaml) {
  absl::StatusOr<Config> config = ParseConfig(yaml, "test.yaml");
  EXPECT_TRUE(config.ok()) << config.status();
  if (!config.ok()) return Config{};
  config->listen = "127.0.0.1:0";
  config->metrics_listen = "";
  return *config;
}

// One hit of `cost` 1, waited for (at most 5 s: backend timeouts are shorter).
inline absl::StatusOr<Decision> Hit(Engine& engine, std::string tenant, std::string uid,
                                    std::string identifier) {
  auto answer = std::make_shared<std::promise<absl::StatusOr<Decision>>>();
  std::future<absl::StatusOr<Decision>> future = answer->get_future();
  HitRequest request;
  request.tenant = tenant;
  request.throttle_uid = uid;
  request.identifier = identifier;
  engine.ShouldThrottle(
      request, [answer](absl::StatusOr<Decision> d) { answer->set_value(std::move(d)); });
  if (future.wait_for(std::chrono::seconds(5)) != std::future_status::ready) {
    return absl::DeadlineExceededError("no answer within 5 s");
  }
  return future.get();
}

// The backend serving `tenant` in the engine's current snapshot.
inline const Backend* BackendOf(Engine& engine, const std::string& tenant) {
  const Snapshot::Tenant* t = engine.snapshot()->FindTenant(tenant);
  return t == nullptr ? nullptr : t->backend;
}

}  // namespace traffik::reload_test
