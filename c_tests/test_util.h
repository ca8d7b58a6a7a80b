/* Shared helpers of the C tests: checks that report the failing line, temporary directories. */
#ifndef WMLICENSE_TEST_UTIL_H
#define WMLICENSE_TEST_UTIL_H

#include "wmlicense.h"

#include "portable.h"

static int wmt_failures = 0;

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);       \
      wmt_failures++;                                                                \
    }                                                                                \
  } while (0)

/* Checks that `expr` returns exactly `expected`; prints both codes and the last error. */
#define CHECK_HR(expr, expected)                                                     \
  do {                                                                               \
    wm_hresult wmt_hr_ = (expr);                                                     \
    wm_hresult wmt_ex_ = (expected);                                                 \
    if (wmt_hr_ != wmt_ex_) {                                                        \
      fprintf(stderr, "%s:%d: %s returned 0x%08x (%s), expected 0x%08x (%s); last error: %s\n", \
              __FILE__, __LINE__, #expr, (unsigned)wmt_hr_, wm_hresult_message(wmt_hr_),       \
              (unsigned)wmt_ex_, wm_hresult_message(wmt_ex_), wm_last_error_message());        \
      wmt_failures++;                                                                \
    }                                                                                \
  } while (0)

/* Stops the test at once when a precondition fails (nothing after it can be meaningful). */
#define REQUIRE_OK(expr)                                                             \
  do {                                                                               \
    wm_hresult wmt_hr_ = (expr);                                                     \
    if (wmt_hr_ != WM_S_OK) {                                                        \
      fprintf(stderr, "%s:%d: %s failed: 0x%08x (%s); %s\n", __FILE__, __LINE__, #expr, \
              (unsigned)wmt_hr_, wm_hresult_message(wmt_hr_), wm_last_error_message());  \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

static inline int wmt_finish(const char *name) {
  if (wmt_failures) {
    fprintf(stderr, "%s: %d check(s) failed\n", name, wmt_failures);
    return 1;
  }
  printf("%s: all checks passed\n", name);
  return 0;
}

/* Creates a fresh directory under $WMLICENSE_TEST_TMP (or /tmp); writes its path to buf. */
static inline void wmt_temp_dir(char *buf, size_t size, const char *tag) {
  const char *base = getenv("WMLICENSE_TEST_TMP");
  if (!base || !*base) base = "/tmp";
  mkdir(base, 0700);
  snprintf(buf, size, "%s/%s-XXXXXX", base, tag);
  if (!mkdtemp(buf)) {
    fprintf(stderr, "mkdtemp(%s): %s\n", buf, strerror(errno));
    exit(1);
  }
}

/* Fills `l` with a license whose key ID is "kid-<n>" and content key derives from n. The
   buffers must outlive the use of `l`. */
static inline void wmt_make_license(wm_license *l, unsigned n, char kid[32], uint8_t key[16], uint32_t rights) {
  size_t i;
  int len = snprintf(kid, 32, "kid-%08u", n);
  for (i = 0; i < 16; i++) key[i] = (uint8_t)(0xA5 ^ (n * 31 + i * 7) ^ (n >> 8));
  memset(l, 0, sizeof *l);
  l->key_id = (const uint8_t *)kid;
  l->key_id_len = (size_t)len;
  l->content_key = key;
  l->content_key_len = 16;
  l->title = NULL;
  l->rights = rights;
  l->play_count = -1;
  l->begin_date = 0;
  l->expiration_date = 0;
  l->issued_at = 1700000000 + (int64_t)n;
}

/* The name of a wm_status value, for failure messages. */
static inline const char *wmt_status_name(int s) {
  switch (s) {
    case WM_STATUS_ERROR: return "ERROR";
    case WM_STATUS_BACKUPRESTORE_BEGIN: return "BEGIN";
    case WM_STATUS_BACKUPRESTORE_END: return "END";
    case WM_STATUS_BACKUPRESTORE_CONNECTING: return "CONNECTING";
    case WM_STATUS_BACKUPRESTORE_DISCONNECTING: return "DISCONNECTING";
    case WM_STATUS_ERROR_WITHURL: return "ERROR_WITHURL";
    case WM_STATUS_RESTRICTED_LICENSE: return "RESTRICTED_LICENSE";
    case WM_STATUS_BACKUPRESTORE_PROGRESS: return "PROGRESS";
    default: return "?";
  }
}

#endif
