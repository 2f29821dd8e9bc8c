// membarrier(2) for the asymmetric store/load handshakes (parked, space wanted).
//
// A producer publishes a lane's tail with a plain (release) store and then
// loads the parked word with a plain load: on x86-64 the load may be satisfied
// before the store leaves the store buffer. The consumer closes that window
// from its side, once per park instead of once per frame: it stores parked = 1,
// issues MEMBARRIER_CMD_GLOBAL_EXPEDITED, then loads every tail. The barrier
// makes every running thread of every registered process execute a full
// memory barrier (an IPI; a thread that is not running has passed one at its
// context switch), so either the producer's tail store was visible before the
// consumer's loads, or the producer's parked load comes after its barrier and
// sees 1. This is the asymmetric Dekker fence of liburcu and Folly's
// asymmetricHeavyBarrier, applied across processes.

#include "barrier.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

#include "errors.h"

namespace shmbus {

namespace {

long Membarrier(int cmd) { return syscall(__NR_membarrier, cmd, 0, 0); }

}  // namespace

Napi::Value MembarrierRegister(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  long supported = Membarrier(MEMBARRIER_CMD_QUERY);
  if (supported < 0 || (supported & MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0 || (supported & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0) {
    return Napi::Boolean::New(env, false);
  }
  return Napi::Boolean::New(env, Membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0);
}

Napi::Value MembarrierGlobal(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (Membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) != 0) ThrowSystemError(env, errno, "membarrier");
  return env.Undefined();
}

}  // namespace shmbus
