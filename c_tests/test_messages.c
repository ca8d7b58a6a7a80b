/* Result codes and their messages: every code macro has the value of SPEC section 2's table,
   wm_hresult_message gives a distinct, non-empty text for each and a different one for unknown
   codes, WM_SUCCEEDED / WM_FAILED tell success from failure, and wm_version matches the
   header. */
#include "test_util.h"

#include <stdint.h>

typedef struct {
  const char *name;
  wm_hresult code;   /* the header's macro */
  uint32_t expected; /* the value in SPEC section 2 */
  int success;       /* 1 for WM_S_*, 0 for WM_E_* */
} code_row;

#define ROW(name, value, ok) {#name, name, value, ok}

static const code_row CODES[] = {
    ROW(WM_S_OK, 0x00000000u, 1),
    ROW(WM_S_FALSE, 0x00000001u, 1),
    ROW(WM_E_NOTIMPL, 0x80004001u, 0),
    ROW(WM_E_POINTER, 0x80004003u, 0),
    ROW(WM_E_UNEXPECTED, 0x8000FFFFu, 0),
    ROW(WM_E_FILE_NOT_FOUND, 0x80070002u, 0),
    ROW(WM_E_ACCESS_DENIED, 0x80070005u, 0),
    ROW(WM_E_HANDLE, 0x80070006u, 0),
    ROW(WM_E_OUTOFMEMORY, 0x8007000Eu, 0),
    ROW(WM_E_INVALIDARG, 0x80070057u, 0),
    ROW(WM_E_DISK_FULL, 0x80070070u, 0),
    ROW(WM_E_BUFFER_TOO_SMALL, 0x8007007Au, 0),
    ROW(WM_E_NOT_FOUND, 0x80070490u, 0),
    ROW(WM_E_LICENSE_STORE_ERROR, 0xC00D2712u, 0),
    ROW(WM_E_NEEDS_INDIVIDUALIZATION, 0xC00D2728u, 0),
    ROW(WM_E_BACKUP_RESTORE_FAILURE, 0xC00D272Du, 0),
    ROW(WM_E_BACKUP_EXISTS, 0xC00D2742u, 0),
    ROW(WM_E_BACKUP_CORRUPT, 0xC00D2743u, 0),
    ROW(WM_E_BACKUPRESTORE_BUSY, 0xC00D2744u, 0),
    ROW(WM_E_INVALID_PROPERTY, 0xC00D2749u, 0),
    ROW(WM_E_UNSUPPORTED_PROPERTY, 0xC00D275Du, 0),
    ROW(WM_E_RESTORE_FRAUD, 0xC00D2753u, 0),
    ROW(WM_E_TOO_MANY_RESETS, 0xC00D2766u, 0),
    ROW(WM_E_OPERATION_CANCELED, 0xC00D2768u, 0),
    ROW(WM_E_RESTORE_SERVICE_UNAVAILABLE, 0xC00D2846u, 0),
    ROW(WM_E_INVALID_KID, 0xC00D2849u, 0),
};

#define NCODES (sizeof CODES / sizeof CODES[0])

int main(void) {
  size_t i, j;
  const char *msgs[NCODES];
  char expected_version[64];

  /* This test needs no store; mark test_util.h's store helpers as used. */
  (void)wmt_temp_dir;
  (void)wmt_rm_rf;
  (void)wmt_make_license;

  CHECK(sizeof(wm_hresult) == 4);
  CHECK((wm_hresult)-1 < 0); /* signed, so WM_FAILED can test the sign */

  for (i = 0; i < NCODES; i++) {
    const code_row *r = &CODES[i];
    const char *m = wm_hresult_message(r->code);
    msgs[i] = m;
    if ((uint32_t)r->code != r->expected) {
      fprintf(stderr, "%s is 0x%08x, SPEC says 0x%08x\n", r->name, (unsigned)(uint32_t)r->code,
              (unsigned)r->expected);
    }
    CHECK((uint32_t)r->code == r->expected);
    /* Success codes are >= 0, failure codes negative, and the macros say so. */
    CHECK((r->code >= 0) == r->success);
    CHECK(WM_SUCCEEDED(r->code) == r->success);
    CHECK(WM_FAILED(r->code) == !r->success);
    if (m == NULL) {
      fprintf(stderr, "wm_hresult_message(%s) is NULL\n", r->name);
    }
    CHECK(m != NULL);
    if (m != NULL) {
      CHECK(m[0] != '\0');
    }
  }

  /* The macros take any integer expression, not only a code constant. */
  CHECK(WM_SUCCEEDED(0) && !WM_FAILED(0));
  CHECK(WM_SUCCEEDED(1) && !WM_FAILED(1));
  CHECK(WM_SUCCEEDED(0x7FFFFFFF) && !WM_FAILED(0x7FFFFFFF));
  CHECK(WM_FAILED(0x80000000u) && !WM_SUCCEEDED(0x80000000u));
  CHECK(WM_FAILED(-1) && !WM_SUCCEEDED(-1));
  CHECK(WM_FAILED(0xC00D2743u) && !WM_SUCCEEDED(0xC00D2743u));

  /* Pairwise distinct codes and distinct messages. */
  for (i = 0; i < NCODES; i++) {
    for (j = i + 1; j < NCODES; j++) {
      CHECK(CODES[i].code != CODES[j].code);
      if (msgs[i] && msgs[j] && strcmp(msgs[i], msgs[j]) == 0) {
        fprintf(stderr, "%s and %s share the message \"%s\"\n", CODES[i].name, CODES[j].name,
                msgs[i]);
        CHECK(strcmp(msgs[i], msgs[j]) != 0);
      }
    }
  }

  /* Unknown codes: a generic text, different from every known code's. */
  {
    static const uint32_t unknown[] = {0x12345678u, 0x80004002u, 0xC00D2713u, 0x00000002u,
                                       0xFFFFFFFFu, 0x80000000u, 0x80070003u};
    const char *first = wm_hresult_message((wm_hresult)unknown[0]);
    size_t u;
    for (u = 0; u < sizeof unknown / sizeof unknown[0]; u++) {
      const char *m = wm_hresult_message((wm_hresult)unknown[u]);
      CHECK(m != NULL);
      if (!m) continue;
      CHECK(m[0] != '\0');
      for (i = 0; i < NCODES; i++) {
        if (msgs[i] && strcmp(m, msgs[i]) == 0) {
          fprintf(stderr, "unknown code 0x%08x gets the message of %s\n", (unsigned)unknown[u],
                  CODES[i].name);
          CHECK(strcmp(m, msgs[i]) != 0);
        }
      }
      /* One generic text for all unknown codes. */
      if (u > 0 && first) CHECK(strcmp(first, m) == 0);
    }
  }

  /* wm_version() is "MAJOR.MINOR.PATCH" of the header's macros. */
  snprintf(expected_version, sizeof expected_version, "%d.%d.%d", (int)WM_VERSION_MAJOR,
           (int)WM_VERSION_MINOR, (int)WM_VERSION_PATCH);
  CHECK(wm_version() != NULL);
  if (wm_version()) {
    if (strcmp(wm_version(), expected_version) != 0) {
      fprintf(stderr, "wm_version() is \"%s\", the header says \"%s\"\n", wm_version(),
              expected_version);
    }
    CHECK(strcmp(wm_version(), expected_version) == 0);
  }

  /* No failure yet on this thread: the last error message is "" (not NULL). */
  CHECK(wm_last_error_message() != NULL && wm_last_error_message()[0] == '\0');

  return wmt_finish("test_messages");
}
