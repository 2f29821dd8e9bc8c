#include "errors.h"

#include <cerrno>
#include <cstring>
#include <string>

namespace shmbus {

const char* ErrnoName(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  // glibc >= 2.32 knows every errno name; returns null for unknown values.
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  return "UNKNOWN";
#else
  // Fallback for other C libraries: the errnos this addon can plausibly meet.
  switch (err) {
#define SHMBUS_ERRNO(e) \
  case e:               \
    return #e;
    SHMBUS_ERRNO(EPERM)
    SHMBUS_ERRNO(ENOENT)
    SHMBUS_ERRNO(ESRCH)
    SHMBUS_ERRNO(EINTR)
    SHMBUS_ERRNO(EIO)
    SHMBUS_ERRNO(ENXIO)
    SHMBUS_ERRNO(E2BIG)
    SHMBUS_ERRNO(EBADF)
    SHMBUS_ERRNO(EAGAIN)
    SHMBUS_ERRNO(ENOMEM)
    SHMBUS_ERRNO(EACCES)
    SHMBUS_ERRNO(EFAULT)
    SHMBUS_ERRNO(EBUSY)
    SHMBUS_ERRNO(EEXIST)
    SHMBUS_ERRNO(ENODEV)
    SHMBUS_ERRNO(ENOTDIR)
    SHMBUS_ERRNO(EISDIR)
    SHMBUS_ERRNO(EINVAL)
    SHMBUS_ERRNO(ENFILE)
    SHMBUS_ERRNO(EMFILE)
    SHMBUS_ERRNO(ETXTBSY)
    SHMBUS_ERRNO(EFBIG)
    SHMBUS_ERRNO(ENOSPC)
    SHMBUS_ERRNO(EROFS)
    SHMBUS_ERRNO(EMLINK)
    SHMBUS_ERRNO(ERANGE)
    SHMBUS_ERRNO(ENAMETOOLONG)
    SHMBUS_ERRNO(ENOSYS)
    SHMBUS_ERRNO(ELOOP)
    SHMBUS_ERRNO(ENODATA)
    SHMBUS_ERRNO(EOVERFLOW)
    SHMBUS_ERRNO(ENOTSUP)
    SHMBUS_ERRNO(ETIMEDOUT)
    SHMBUS_ERRNO(EDQUOT)
#undef SHMBUS_ERRNO
    default:
      return "UNKNOWN";
  }
#endif
}

namespace {

Napi::Error Decorate(Napi::Env env, Napi::Error error, int err, const char* syscall, const char* path) {
  Napi::Object obj = error.Value();
  obj.Set("code", Napi::String::New(env, ErrnoName(err)));
  obj.Set("errno", Napi::Number::New(env, err));
  obj.Set("syscall", Napi::String::New(env, syscall));
  if (path != nullptr) obj.Set("path", Napi::String::New(env, path));
  return error;
}

}  // namespace

Napi::Error SystemError(Napi::Env env, int err, const char* syscall, const char* path, const char* detail) {
  std::string message = syscall;
  message += ' ';
  message += ErrnoName(err);
  if (path != nullptr) {
    message += ' ';
    message += path;
  }
  if (detail != nullptr) {
    message += " (";
    message += detail;
    message += ')';
  }
  return Decorate(env, Napi::Error::New(env, message), err, syscall, path);
}

void ThrowSystemError(Napi::Env env, int err, const char* syscall, const char* path, const char* detail) {
  throw SystemError(env, err, syscall, path, detail);
}

void ThrowSystemErrorWithMessage(Napi::Env env, int err, const char* syscall, const char* path,
                                 const std::string& message) {
  throw Decorate(env, Napi::Error::New(env, message), err, syscall, path);
}

void ThrowTypeError(Napi::Env env, const std::string& message) { throw Napi::TypeError::New(env, message); }

void ThrowRangeError(Napi::Env env, const std::string& message) { throw Napi::RangeError::New(env, message); }

}  // namespace shmbus
