#pragma once

#include "engine/engine.h"
#include "metrics/metrics.h"
#include "traffik/v1/admin.grpc.pb.h"

namespace traffik {

// The traffik.v1.AdminService gRPC callback service (proto/traffik/v1/admin.proto):
// translates protos to the engine's admin entry points (GetBucket,
// ResetBuckets, ListThrottles) and back, and counts each call in
// traffik_admin_requests_total{rpc,code}. Never blocks a gRPC thread: a call
// on a network backend finishes from the backend's callback.
//
// Registered only when the config has `admin_api: true`. With `auth:
// required` only callers with `admin: true` reach it, and only for their
// granted tenants (PERMISSION_DENIED otherwise, UNAUTHENTICATED without a
// known credential); with `auth: off` anyone who reaches the port may call it,
// as before.
//
// Thread-safe; the engine and metrics must outlive the server.
class AdminServiceImpl final : public traffik::v1::AdminService::CallbackService {
 public:
  AdminServiceImpl(const Engine& engine, Metrics& metrics)
      : engine_(engine), metrics_(metrics) {}
  AdminServiceImpl(const AdminServiceImpl&) = delete;
  AdminServiceImpl& operator=(const AdminServiceImpl&) = delete;

  grpc::ServerUnaryReactor* ResetBuckets(
      grpc::CallbackServerContext* context,
      const traffik::v1::ResetBucketsRequest* request,
      traffik::v1::ResetBucketsResponse* response) override;

  grpc::ServerUnaryReactor* GetBucket(grpc::CallbackServerContext* context,
                                      const traffik::v1::GetBucketRequest* request,
                                      traffik::v1::GetBucketResponse* response) override;

  grpc::ServerUnaryReactor* ListThrottles(
      grpc::CallbackServerContext* context,
      const traffik::v1::ListThrottlesRequest* request,
      traffik::v1::ListThrottlesResponse* response) override;

 private:
  const Engine& engine_;
  Metrics& metrics_;
};

// The gRPC service name of the admin API.
inline constexpr char kAdminServiceName[] = "traffik.v1.AdminService";

}  // namespace traffik
