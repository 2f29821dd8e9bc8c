// Futex wake/wait across processes, and process identity.
#ifndef SHMBUS_WAIT_H
#define SHMBUS_WAIT_H

#include <napi.h>

namespace shmbus {

// Defines the waiter class (kept in the addon's instance data, not exported).
void InitWaiters(Napi::Env env);

Napi::Value FutexWake(const Napi::CallbackInfo& info);
Napi::Value CreateWaiter(const Napi::CallbackInfo& info);
Napi::Value ProcessStartTime(const Napi::CallbackInfo& info);

}  // namespace shmbus

#endif  // SHMBUS_WAIT_H
