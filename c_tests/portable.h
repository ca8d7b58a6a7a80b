/* What the C tests use from POSIX that Windows (MinGW-w64) lacks: mkdtemp, setenv, unsetenv,
   mkdir with a mode, nftw for removing a tree. Elsewhere it includes the POSIX headers. */
#ifndef WMLICENSE_TEST_PORTABLE_H
#define WMLICENSE_TEST_PORTABLE_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifdef _WIN32
#include <direct.h>
#include <dirent.h>
#include <io.h>
#include <process.h>
#include <unistd.h>
#include <windows.h>

/* mkdir(path, mode): Windows has no modes (the library sets owner-only ACLs itself). */
#define mkdir(path, mode) _mkdir(path)

static inline char *wmt_mkdtemp(char *tmpl) {
  static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  size_t n = strlen(tmpl);
  unsigned long long seed = (unsigned long long)GetTickCount64() ^ ((unsigned long long)_getpid() << 20);
  int attempt, i;
  if (n < 6 || strcmp(tmpl + n - 6, "XXXXXX") != 0) {
    errno = EINVAL;
    return NULL;
  }
  for (attempt = 0; attempt < 1000; attempt++) {
    for (i = 0; i < 6; i++) {
      seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
      tmpl[n - 6 + i] = digits[(seed >> 33) % 36];
    }
    if (_mkdir(tmpl) == 0) return tmpl;
    if (errno != EEXIST) return NULL;
  }
  return NULL;
}
#define mkdtemp wmt_mkdtemp

/* _putenv_s changes the C runtime's copy and the process's (which the library reads). */
static inline int wmt_setenv(const char *name, const char *value, int overwrite) {
  if (!overwrite && getenv(name)) return 0;
  return _putenv_s(name, value) == 0 ? 0 : -1;
}
#define setenv wmt_setenv
static inline int wmt_unsetenv(const char *name) { return _putenv_s(name, "") == 0 ? 0 : -1; }
#define unsetenv wmt_unsetenv

/* sysconf(_SC_NPROCESSORS_ONLN) only. */
#define _SC_NPROCESSORS_ONLN 84
static inline long wmt_sysconf(int name) {
  SYSTEM_INFO si;
  if (name != _SC_NPROCESSORS_ONLN) return -1;
  GetSystemInfo(&si);
  return (long)si.dwNumberOfProcessors;
}
#define sysconf wmt_sysconf

/* nftw: what the tests use of it (files and directories; FTW_DEPTH for post-order). */
struct FTW {
  int base;
  int level;
};
enum { FTW_F = 0, FTW_D = 1, FTW_DNR = 2, FTW_NS = 3, FTW_SL = 4, FTW_DP = 5 };
#define FTW_PHYS 1
#define FTW_DEPTH 8
typedef int (*wmt_nftw_fn)(const char *, const struct stat *, int, struct FTW *);
static inline int wmt_nftw_at(const char *path, wmt_nftw_fn fn, int flags, int level) {
  struct stat st;
  struct FTW ftw;
  const char *slash = strrchr(path, '/');
  int r;
  ftw.base = slash ? (int)(slash - path + 1) : 0;
  ftw.level = level;
  if (stat(path, &st) != 0) return fn(path, &st, FTW_NS, &ftw);
  if (!S_ISDIR(st.st_mode)) return fn(path, &st, FTW_F, &ftw);
  if (!(flags & FTW_DEPTH) && (r = fn(path, &st, FTW_D, &ftw)) != 0) return r;
  {
    DIR *d = opendir(path);
    struct dirent *e;
    if (!d) return fn(path, &st, FTW_DNR, &ftw);
    while ((e = readdir(d)) != NULL) {
      char child[4096];
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      snprintf(child, sizeof child, "%s/%s", path, e->d_name);
      if ((r = wmt_nftw_at(child, fn, flags, level + 1)) != 0) {
        closedir(d);
        return r;
      }
    }
    closedir(d);
  }
  return (flags & FTW_DEPTH) ? fn(path, &st, FTW_DP, &ftw) : 0;
}
static inline int wmt_nftw(const char *path, wmt_nftw_fn fn, int fds, int flags) {
  (void)fds;
  return wmt_nftw_at(path, fn, flags, 0);
}
#define nftw wmt_nftw
/* remove() deletes files only on Windows. */
static inline int wmt_remove(const char *path) {
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return _rmdir(path);
  return remove(path);
}

/* A test that cannot mean anything on Windows says why and passes. */
#define WMT_SKIP_ON_WINDOWS(name, reason)                     \
  do {                                                        \
    printf("%s: skipped on Windows: %s\n", name, reason);     \
    return 0;                                                 \
  } while (0)

#else
#include <ftw.h>
#include <unistd.h>

#define wmt_remove remove
#define WMT_SKIP_ON_WINDOWS(name, reason) ((void)0)
#endif

static inline int wmt_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb; (void)flag; (void)ftw;
  return wmt_remove(path);
}

/* Removes a directory tree (best effort). */
static inline void wmt_rm_rf(const char *path) {
  nftw(path, wmt_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
