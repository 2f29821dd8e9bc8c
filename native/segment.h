// Shared-memory segments: files (normally under /dev/shm) mapped MAP_SHARED
// and handed to JavaScript as external ArrayBuffers.
#ifndef SHMBUS_SEGMENT_H
#define SHMBUS_SEGMENT_H

#include <napi.h>

#include <cstddef>
#include <memory>
#include <mutex>

namespace shmbus {

// One mapping. Its mutable fields are guarded by MappingMutex().
//
// Ownership (std::shared_ptr): the ArrayBuffer's finalizer hint and every
// waiter created on the mapping. The registry only holds a weak_ptr. The pages
// are unmapped either explicitly by unmap() (immediately; refused while a
// waiter is armed) or, failing that, when the last owner lets go (~Mapping):
// normally when the ArrayBuffer is collected, since waiters keep the
// ArrayBuffer alive; at environment teardown, where Node releases external
// buffers before wrapped objects, the pages stay mapped until the last waiter
// has stopped its thread.
struct Mapping {
  void* addr = nullptr;
  size_t length = 0;
  bool unmapped = false;      // munmap done (by unmap() or on a failed wrap)
  unsigned armedWaiters = 0;  // waiters currently armed on a word of this mapping

  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();
};

std::mutex& MappingMutex();

// The mapping whose (live) ArrayBuffer has the data pointer `data`, or null.
// Caller holds MappingMutex().
std::shared_ptr<Mapping> FindMappingLocked(void* data);

Napi::Value PageSize(Napi::Env env);
Napi::Value Create(const Napi::CallbackInfo& info);
Napi::Value Open(const Napi::CallbackInfo& info);
Napi::Value Unmap(const Napi::CallbackInfo& info);
Napi::Value Unlink(const Napi::CallbackInfo& info);

}  // namespace shmbus

#endif  // SHMBUS_SEGMENT_H
