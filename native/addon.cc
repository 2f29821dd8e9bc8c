// shmbus native addon: module initialisation and export table.
// See src/native.ts for the contract (NativeBinding).

#include <napi.h>

#include "barrier.h"
#include "doorbell.h"
#include "segment.h"
#include "wait.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // The waiter class stays internal; createWaiter() constructs it.
  shmbus::InitWaiters(env);

  exports.DefineProperty(Napi::PropertyDescriptor::Value("pageSize", shmbus::PageSize(env), napi_enumerable));
  exports.Set("create", Napi::Function::New(env, shmbus::Create, "create"));
  exports.Set("open", Napi::Function::New(env, shmbus::Open, "open"));
  exports.Set("unmap", Napi::Function::New(env, shmbus::Unmap, "unmap"));
  exports.Set("unlink", Napi::Function::New(env, shmbus::Unlink, "unlink"));
  exports.Set("futexWake", Napi::Function::New(env, shmbus::FutexWake, "futexWake"));
  exports.Set("createWaiter", Napi::Function::New(env, shmbus::CreateWaiter, "createWaiter"));
  exports.Set("processStartTime", Napi::Function::New(env, shmbus::ProcessStartTime, "processStartTime"));
  exports.Set("udpDoorbell", Napi::Function::New(env, shmbus::UdpDoorbell, "udpDoorbell"));
  exports.Set("membarrierRegister", Napi::Function::New(env, shmbus::MembarrierRegister, "membarrierRegister"));
  exports.Set("membarrierGlobal", Napi::Function::New(env, shmbus::MembarrierGlobal, "membarrierGlobal"));
  return exports;
}

}  // namespace

NODE_API_MODULE(shmbus, Init)
