// create / open / unmap / unlink / pageSize.
//
// Lifetime of a mapping (see also struct Mapping in segment.h):
//   mmap ──> registry entry (weak) + external ArrayBuffer whose finalizer hint
//   is a heap std::shared_ptr<Mapping>
//   ├─ unmap(buffer): drop the registry entry, detach the ArrayBuffer, munmap,
//   │  mark `unmapped`. The finalizer still runs later (when V8 frees the
//   │  detached backing store) and then only releases the hint.
//   └─ never unmapped explicitly: the finalizer drops the registry entry and
//      releases the hint; ~Mapping munmaps once no waiter holds it either.
// Registry entries are removed no later than the pages are unmapped, because
// the kernel may hand the same address to the next mmap.
//
// SIGBUS caveat: open() maps the file as long as it is *now*. If another
// process later truncates the file, touching pages beyond the new end of file
// raises SIGBUS (and a futex on such a page fails with EFAULT). This is
// accepted: segment sizes are validated in JS against the header, and nobody
// but the creator sizes a segment. Likewise tmpfs allocates pages lazily, so
// writing into a segment when /dev/shm is full raises SIGBUS; ftruncate does
// not reserve memory.

#include "segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <unordered_map>

#include "args.h"
#include "errors.h"

namespace shmbus {

namespace {

std::unordered_map<void*, std::weak_ptr<Mapping>>& Registry() {
  // Leaked on purpose: finalizers may run during process teardown, after
  // static destructors would have destroyed a plain static.
  static auto* registry = new std::unordered_map<void*, std::weak_ptr<Mapping>>();
  return *registry;
}

// Removes the registry entry of `m` (if it is still the one for its address).
// Caller holds MappingMutex().
void UnregisterLocked(const Mapping* m) {
  auto it = Registry().find(m->addr);
  if (it == Registry().end()) return;
  auto current = it->second.lock();
  if (!current || current.get() == m) Registry().erase(it);
}

int CloseNoIntr(int fd) {
  // On Linux the fd is released even when close() reports EINTR: never retry.
  return close(fd);
}

// napi finalizer of a mapping's ArrayBuffer; runs on the JS thread. The
// ArrayBuffer is gone, so nobody can look the mapping up any more; the pages
// go when the last owner does (~Mapping).
void FinalizeMapping(napi_env /*env*/, void* /*data*/, void* hint) {
  auto* holder = static_cast<std::shared_ptr<Mapping>*>(hint);
  {
    std::lock_guard<std::mutex> lock(MappingMutex());
    UnregisterLocked(holder->get());
  }
  delete holder;  // may run ~Mapping (munmap); outside the lock
}

// Hands a fresh mapping to JS. On failure the mapping is released (and, when
// `unlinkOnFailure`, the file removed) before throwing.
Napi::Value WrapMapping(Napi::Env env, void* addr, size_t length, const std::string& path, bool unlinkOnFailure) {
  auto mapping = std::make_shared<Mapping>();
  mapping->addr = addr;
  mapping->length = length;
  auto* hint = new std::shared_ptr<Mapping>(mapping);
  {
    std::lock_guard<std::mutex> lock(MappingMutex());
    Registry()[addr] = mapping;
  }

  napi_value result = nullptr;
  napi_status status = napi_create_external_arraybuffer(env, addr, length, FinalizeMapping, hint, &result);
  if (status == napi_ok) return Napi::Value(env, result);

  // Failure. Some Node versions invoke (asynchronously) the finalizer even when
  // creation fails, others do not; so: unmap here and mark it, never free the
  // hint here (if the finalizer does run it only releases the hint; if it does
  // not, a few bytes leak on this rare path).
  {
    std::lock_guard<std::mutex> lock(MappingMutex());
    UnregisterLocked(mapping.get());
    munmap(addr, length);
    mapping->unmapped = true;
  }
  if (status == napi_no_external_buffers_allowed) delete hint;  // refused up front: no finalizer was set up
  if (unlinkOnFailure) unlink(path.c_str());

  if (status == napi_no_external_buffers_allowed) {
    // Electron (and other builds with the V8 sandbox) cannot wrap foreign
    // memory in an ArrayBuffer at all.
    ThrowSystemErrorWithMessage(env, ENOTSUP, "napi_create_external_arraybuffer", path.c_str(),
                                "napi_create_external_arraybuffer ENOTSUP " + path +
                                    ": external ArrayBuffers are refused by this runtime (V8 sandbox), so shmbus "
                                    "cannot map shared memory here");
  }
  if (env.IsExceptionPending()) throw env.GetAndClearPendingException();
  const napi_extended_error_info* info = nullptr;
  napi_get_last_error_info(env, &info);
  std::string message = "napi_create_external_arraybuffer failed for " + path;
  if (info != nullptr && info->error_message != nullptr) message += std::string(": ") + info->error_message;
  throw Napi::Error::New(env, message);
}

}  // namespace

std::mutex& MappingMutex() {
  static auto* mutex = new std::mutex();  // leaked on purpose, see Registry()
  return *mutex;
}

Mapping::~Mapping() {
  // Last owner gone without an explicit unmap(). No lock needed: nobody else
  // can reach this mapping any more (its registry entry went first).
  if (!unmapped) munmap(addr, length);
}

std::shared_ptr<Mapping> FindMappingLocked(void* data) {
  auto it = Registry().find(data);
  if (it == Registry().end()) return nullptr;
  return it->second.lock();
}

Napi::Value PageSize(Napi::Env env) { return Napi::Number::New(env, static_cast<double>(sysconf(_SC_PAGESIZE))); }

// create(path, size, mode): ArrayBuffer
Napi::Value Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = RequirePath(info, 0, "path");
  double size = RequireNumber(info, 1, "size");
  double modeNumber = RequireNumber(info, 2, "mode");
  if (!IsSafeInteger(modeNumber) || modeNumber < 0 || modeNumber > 07777)
    ThrowTypeError(env, "shmbus: mode must be an integer between 0 and 0o7777");
  // Checked before the file is created, so a bad size leaves nothing behind.
  if (!IsSafeInteger(size) || size <= 0 || size > static_cast<double>(SIZE_MAX / 2))
    ThrowSystemError(env, EINVAL, "ftruncate", path.c_str(), "size must be a positive integer");
  const size_t length = static_cast<size_t>(size);
  const mode_t mode = static_cast<mode_t>(modeNumber);

  int fd;
  do {
    fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) ThrowSystemError(env, errno, "open", path.c_str());

  // From here on the file exists: every failure removes it again.
  auto fail = [&](const char* syscall) {
    int err = errno;
    if (fd >= 0) CloseNoIntr(fd);
    unlink(path.c_str());
    ThrowSystemError(env, err, syscall, path.c_str());
  };
  // open() applied the umask; make the mode exactly what was asked.
  if (fchmod(fd, mode) != 0) fail("fchmod");
  int rc;
  do {
    rc = ftruncate(fd, static_cast<off_t>(length));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) fail("ftruncate");
  void* addr = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) fail("mmap");
  CloseNoIntr(fd);  // the mapping keeps the file referenced
  fd = -1;

  return WrapMapping(env, addr, length, path, /*unlinkOnFailure=*/true);
}

// open(path): ArrayBuffer
Napi::Value Open(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = RequirePath(info, 0, "path");

  int fd;
  do {
    fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) ThrowSystemError(env, errno, "open", path.c_str());

  auto fail = [&](int err, const char* syscall) {
    CloseNoIntr(fd);
    ThrowSystemError(env, err, syscall, path.c_str());
  };
  struct stat st;
  if (fstat(fd, &st) != 0) fail(errno, "fstat");
  // Zero length: the creator has not run ftruncate yet, or it is no segment.
  if (st.st_size <= 0) fail(ENODATA, "mmap");
  if (static_cast<unsigned long long>(st.st_size) > SIZE_MAX / 2) fail(EFBIG, "mmap");
  const size_t length = static_cast<size_t>(st.st_size);
  // Mapped as the file is now; see the SIGBUS caveat at the top of this file.
  void* addr = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) fail(errno, "mmap");
  CloseNoIntr(fd);

  return WrapMapping(env, addr, length, path, /*unlinkOnFailure=*/false);
}

// unmap(buffer): undefined
Napi::Value Unmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::ArrayBuffer buffer = RequireArrayBuffer(info, 0, "buffer");
  if (IsDetached(env, buffer)) return env.Undefined();  // unmapped already (or detached otherwise): no-op

  void* data = buffer.Data();
  std::shared_ptr<Mapping> mapping;
  {
    std::lock_guard<std::mutex> lock(MappingMutex());
    mapping = FindMappingLocked(data);
    if (!mapping || mapping->length != buffer.ByteLength())
      ThrowTypeError(env, "shmbus: unmap() expects an ArrayBuffer returned by create() or open()");
    if (mapping->armedWaiters > 0)
      ThrowSystemError(env, EBUSY, "munmap", nullptr, "a waiter on this mapping is armed; close it first");
    // Claim it: from now on ~Mapping will not munmap.
    mapping->unmapped = true;
    UnregisterLocked(mapping.get());
  }

  // Detach first so JavaScript can never reach the pages once they are gone.
  napi_status status = napi_detach_arraybuffer(env, buffer);
  if (status != napi_ok) {
    std::lock_guard<std::mutex> lock(MappingMutex());
    mapping->unmapped = false;
    Registry()[data] = mapping;
  }
  NAPI_THROW_IF_FAILED(env, status, env.Undefined());

  if (munmap(mapping->addr, mapping->length) != 0) ThrowSystemError(env, errno, "munmap");
  return env.Undefined();
}

// unlink(path): undefined
Napi::Value Unlink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = RequirePath(info, 0, "path");
  if (unlink(path.c_str()) != 0) ThrowSystemError(env, errno, "unlink", path.c_str());
  return env.Undefined();
}

}  // namespace shmbus
