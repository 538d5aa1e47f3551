#pragma once

#include <memory>

#include "e2e/traffikd_process.h"
#include "gtest/gtest.h"

namespace traffik::e2e {

// A fixture base that starts one traffikd (gRPC on 127.0.0.1:0, metrics off)
// for the whole suite; tests reach it through server(). Suites that need
// buckets of their own use distinct identifiers.
class SharedTraffikdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<TraffikdProcess>> server =
        TraffikdProcess::Start({"--listen", "127.0.0.1:0", "--metrics-listen", ""});
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }
  static void TearDownTestSuite() { server_.reset(); }
  void SetUp() override { ASSERT_NE(server_, nullptr); }

  static TraffikdProcess& server() { return *server_; }

 private:
  inline static std::unique_ptr<TraffikdProcess> server_;
};

}  // namespace traffik::e2e
