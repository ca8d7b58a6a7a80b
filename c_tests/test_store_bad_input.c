/* Bad input to every wm_license_store_* function gets its exact result code, never a crash:
   NULL pointers, key IDs / content keys / titles out of bounds, bad UTF-8, bad dates, unknown
   rights bits, bad paths, closed and made-up handles. A rejected call changes nothing and writes
   no out-pointer; wm_last_error_message says what was wrong. */
#include "test_util.h"

#include <limits.h>

#define SENTINEL_COUNT ((uint64_t)0xDEADBEEFCAFEF00Dull)
#define SENTINEL_STORE ((wm_license_store *)(uintptr_t)0x5EA10)

static int visits = 0;
static int32_t count_visit(const wm_license *l, void *ctx) {
  (void)l;
  (void)ctx;
  visits++;
  return 0;
}

typedef struct {
  int calls;
  const wm_license *want;
  int match;
} matcher;

static int32_t match_visit(const wm_license *l, void *ctx) {
  matcher *m = (matcher *)ctx;
  const wm_license *w = m->want;
  m->calls++;
  if (l->key_id_len == w->key_id_len && memcmp(l->key_id, w->key_id, w->key_id_len) == 0 &&
      l->content_key_len == w->content_key_len &&
      memcmp(l->content_key, w->content_key, w->content_key_len) == 0 &&
      (l->title == NULL) == (w->title == NULL) && (!w->title || strcmp(l->title, w->title) == 0) &&
      l->rights == w->rights && l->play_count == w->play_count && l->begin_date == w->begin_date &&
      l->expiration_date == w->expiration_date && l->issued_at == w->issued_at)
    m->match++;
  return 0;
}

static wm_license_store *S; /* the store under test */
static char note[80];       /* which case of a loop is running, for failure messages */
static uint64_t expected_count = 0;

static uint64_t store_count(void) {
  uint64_t c = SENTINEL_COUNT;
  CHECK_HR(wm_license_store_count(S, &c), WM_S_OK);
  return c;
}

/* The message of the last failure is non-empty and, if `word` is given, mentions it. */
static void check_message(int line, const char *word) {
  const char *m = wm_last_error_message();
  if (m == NULL || m[0] == '\0' || (word && strstr(m, word) == NULL)) {
    fprintf(stderr, "%s:%d: last error message \"%s\" should mention \"%s\"\n", __FILE__, line,
            m ? m : "(NULL)", word ? word : "(anything)");
    wmt_failures++;
  }
}
#define CHECK_MESSAGE(word) check_message(__LINE__, word)

/* put must reject `l` with `code`, leave the count as it was and store nothing under its key. */
static void reject_put(int line, const wm_license *l, wm_hresult code, const char *word,
                       int already_stored) {
  wm_hresult hr = wm_license_store_put(S, l);
  uint64_t c;
  if (hr != code) {
    fprintf(stderr, "%s:%d:%s wm_license_store_put returned 0x%08x (%s), expected 0x%08x (%s); %s\n",
            __FILE__, line, note, (unsigned)hr, wm_hresult_message(hr), (unsigned)code,
            wm_hresult_message(code), wm_last_error_message());
    wmt_failures++;
  } else {
    check_message(line, word);
  }
  /* put_many with the bad license in the middle of good ones: same code, nothing stored. */
  {
    wm_license many[3];
    char kid0[32], kid2[32];
    uint8_t key0[16], key2[16];
    wmt_make_license(&many[0], 900001, kid0, key0, WM_RIGHT_PLAYBACK);
    many[1] = *l;
    wmt_make_license(&many[2], 900002, kid2, key2, WM_RIGHT_PLAYBACK);
    hr = wm_license_store_put_many(S, many, 3);
    if (hr != code) {
      fprintf(stderr, "%s:%d:%s wm_license_store_put_many returned 0x%08x (%s), expected 0x%08x (%s); %s\n",
              __FILE__, line, note, (unsigned)hr, wm_hresult_message(hr), (unsigned)code,
              wm_hresult_message(code), wm_last_error_message());
      wmt_failures++;
    }
    visits = 0;
    CHECK_HR(wm_license_store_get(S, many[0].key_id, many[0].key_id_len, count_visit, NULL), WM_E_NOT_FOUND);
    CHECK(visits == 0);
  }
  c = store_count();
  if (c != expected_count) {
    fprintf(stderr, "%s:%d: after a rejected put the store holds %llu licenses, expected %llu\n",
            __FILE__, line, (unsigned long long)c, (unsigned long long)expected_count);
    wmt_failures++;
  }
  if (!already_stored && l->key_id && l->key_id_len >= 1 && l->key_id_len <= 64) {
    visits = 0;
    hr = wm_license_store_get(S, l->key_id, l->key_id_len, count_visit, NULL);
    if (hr != WM_E_NOT_FOUND || visits != 0) {
      fprintf(stderr, "%s:%d: a rejected license can be read back (get: 0x%08x, %d visits)\n",
              __FILE__, line, (unsigned)hr, visits);
      wmt_failures++;
    }
  }
}
#define REJECT_PUT(l, code, word) reject_put(__LINE__, (l), (code), (word), 0)
/* The same for a license whose key ID is already stored (a rejected upsert). */
#define REJECT_UPSERT(l, code, word) reject_put(__LINE__, (l), (code), (word), 1)

/* put must accept `l`, store exactly it (read back through get), and count one more if new. */
static void accept_put(int line, const wm_license *l) {
  matcher m;
  wm_hresult hr = wm_license_store_put(S, l);
  if (hr != WM_S_OK) {
    fprintf(stderr, "%s:%d: wm_license_store_put returned 0x%08x (%s), expected WM_S_OK; %s\n",
            __FILE__, line, (unsigned)hr, wm_hresult_message(hr), wm_last_error_message());
    wmt_failures++;
    return;
  }
  expected_count++;
  memset(&m, 0, sizeof m);
  m.want = l;
  hr = wm_license_store_get(S, l->key_id, l->key_id_len, match_visit, &m);
  if (hr != WM_S_OK || m.calls != 1 || m.match != 1) {
    fprintf(stderr, "%s:%d: the accepted license does not read back (get: 0x%08x, %d calls, %d match)\n",
            __FILE__, line, (unsigned)hr, m.calls, m.match);
    wmt_failures++;
  }
  if (store_count() != expected_count) {
    fprintf(stderr, "%s:%d: count is not %llu after an accepted put\n", __FILE__, line,
            (unsigned long long)expected_count);
    wmt_failures++;
  }
}
#define ACCEPT_PUT(l) accept_put(__LINE__, (l))

/* A valid license with key ID "good-<n>"; the buffers are static per slot. */
static wm_license good(unsigned n) {
  static char kids[64][32];
  static const uint8_t key[16] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 10, 11, 12, 13, 14, 15};
  wm_license l;
  int len = snprintf(kids[n % 64], 32, "good-%u", n);
  memset(&l, 0, sizeof l);
  l.key_id = (const uint8_t *)kids[n % 64];
  l.key_id_len = (size_t)len;
  l.content_key = key;
  l.content_key_len = sizeof key;
  l.title = "A title";
  l.rights = WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP;
  l.play_count = 5;
  l.begin_date = 1000;
  l.expiration_date = 2000;
  l.issued_at = 1500;
  return l;
}

int main(void) {
  char dir[512], file_path[600], below_file[700];
  wm_license_store *out;
  wm_license l;
  uint64_t c;
  static uint8_t bytes65[65], bytes64[64];
  static char title1025[1026], title1024[1025], utf8_1024[1025], utf8_1025[1026];
  static char long_path[4200];
  unsigned n = 0;
  size_t i;

  for (i = 0; i < sizeof bytes65; i++) bytes65[i] = (uint8_t)(i * 3 + 1);
  for (i = 0; i < sizeof bytes64; i++) bytes64[i] = (uint8_t)(200 - i);
  memset(title1025, 't', 1025);
  memset(title1024, 'T', 1024);
  /* 1024 / 1025 bytes of UTF-8 made of 3-byte characters (U+20AC) plus ASCII. */
  for (i = 0; i + 3 <= 1023; i += 3) memcpy(utf8_1024 + i, "\xE2\x82\xAC", 3);
  utf8_1024[1023] = 'x';
  memcpy(utf8_1025, utf8_1024, 1024);
  utf8_1025[1024] = 'y';

  /* Nothing has failed yet on this thread. */
  CHECK(wm_last_error_message() != NULL && wm_last_error_message()[0] == '\0');

  wmt_temp_dir(dir, sizeof dir, "badinput");

  /* ---- wm_license_store_open ---- */
  CHECK_HR(wm_license_store_open(dir, NULL), WM_E_POINTER);
  CHECK_MESSAGE("out_store");
  CHECK_HR(wm_license_store_open(NULL, NULL), WM_E_POINTER);
  out = SENTINEL_STORE;
  CHECK_HR(wm_license_store_open("\xff\xfe", &out), WM_E_INVALIDARG);
  CHECK(out == SENTINEL_STORE);
  CHECK_MESSAGE("UTF-8");
  {
    char bad_utf8_path[600];
    snprintf(bad_utf8_path, sizeof bad_utf8_path, "%s/st\xC3\x28re", dir); /* invalid 2-byte seq */
    CHECK_HR(wm_license_store_open(bad_utf8_path, &out), WM_E_INVALIDARG);
    CHECK(out == SENTINEL_STORE);
    CHECK(access(bad_utf8_path, F_OK) != 0); /* nothing created */
  }
  CHECK_HR(wm_license_store_open("", &out), WM_E_INVALIDARG);
  CHECK(out == SENTINEL_STORE);
  CHECK_MESSAGE(NULL);
  /* Longer than 4096 bytes. */
  snprintf(long_path, sizeof long_path, "%s/", dir);
  for (i = strlen(long_path); i < 4100; i++) long_path[i] = 'a';
  long_path[4100] = '\0';
  CHECK_HR(wm_license_store_open(long_path, &out), WM_E_INVALIDARG);
  CHECK(out == SENTINEL_STORE);
  /* A regular file where the store directory should be: the store cannot be created. */
  snprintf(file_path, sizeof file_path, "%s/not-a-dir", dir);
  {
    FILE *f = fopen(file_path, "w");
    CHECK(f != NULL);
    if (f) {
      fputs("x", f);
      fclose(f);
    }
  }
  CHECK_HR(wm_license_store_open(file_path, &out), WM_E_LICENSE_STORE_ERROR);
  CHECK(out == SENTINEL_STORE);
  CHECK_MESSAGE(NULL);
  snprintf(below_file, sizeof below_file, "%s/sub", file_path);
  CHECK_HR(wm_license_store_open(below_file, &out), WM_E_LICENSE_STORE_ERROR);
  CHECK(out == SENTINEL_STORE);

  REQUIRE_OK(wm_license_store_open(dir, &S));
  CHECK(S != NULL && S != SENTINEL_STORE);
  CHECK(store_count() == 0);

  /* ---- NULL pointers ---- */
  l = good(n++);
  CHECK_HR(wm_license_store_put(NULL, &l), WM_E_POINTER);
  CHECK_MESSAGE("store");
  CHECK_HR(wm_license_store_put(S, NULL), WM_E_POINTER);
  CHECK_MESSAGE("license");
  CHECK_HR(wm_license_store_put(NULL, NULL), WM_E_POINTER);
  CHECK_HR(wm_license_store_put_many(NULL, &l, 1), WM_E_POINTER);
  CHECK_MESSAGE("store");
  CHECK_HR(wm_license_store_put_many(NULL, NULL, 0), WM_E_POINTER);
  CHECK_HR(wm_license_store_put_many(S, NULL, 1), WM_E_POINTER);
  CHECK_MESSAGE("licenses");
  CHECK_HR(wm_license_store_put_many(S, NULL, 5), WM_E_POINTER);
  CHECK_HR(wm_license_store_put_many(S, NULL, 0), WM_S_OK); /* nothing to do */
  CHECK(store_count() == 0);

  visits = 0;
  CHECK_HR(wm_license_store_get(NULL, l.key_id, l.key_id_len, count_visit, NULL), WM_E_POINTER);
  CHECK_MESSAGE("store");
  CHECK_HR(wm_license_store_get(S, NULL, 4, count_visit, NULL), WM_E_POINTER);
  CHECK_MESSAGE("key_id");
  CHECK_HR(wm_license_store_get(S, l.key_id, l.key_id_len, NULL, NULL), WM_E_POINTER);
  CHECK_MESSAGE("visitor");
  CHECK(visits == 0);

  CHECK_HR(wm_license_store_remove(NULL, l.key_id, l.key_id_len), WM_E_POINTER);
  CHECK_MESSAGE("store");
  CHECK_HR(wm_license_store_remove(S, NULL, 4), WM_E_POINTER);
  CHECK_MESSAGE("key_id");

  c = SENTINEL_COUNT;
  CHECK_HR(wm_license_store_count(NULL, &c), WM_E_POINTER);
  CHECK_MESSAGE("store");
  CHECK(c == SENTINEL_COUNT);
  CHECK_HR(wm_license_store_count(S, NULL), WM_E_POINTER);
  CHECK_MESSAGE("out_count");
  CHECK_HR(wm_license_store_count(NULL, NULL), WM_E_POINTER);

  CHECK_HR(wm_license_store_for_each(NULL, count_visit, NULL), WM_E_POINTER);
  CHECK_MESSAGE("store");
  CHECK_HR(wm_license_store_for_each(S, NULL, NULL), WM_E_POINTER);
  CHECK_MESSAGE("visitor");
  CHECK(visits == 0);

  /* NULL byte pointers inside a license with a non-zero length. */
  l = good(n++);
  l.key_id = NULL;
  REJECT_PUT(&l, WM_E_POINTER, "key_id");
  l = good(n++);
  l.content_key = NULL;
  REJECT_PUT(&l, WM_E_POINTER, "content_key");

  /* ---- key IDs: 1..64 bytes ---- */
  l = good(n++);
  l.key_id_len = 0;
  REJECT_PUT(&l, WM_E_INVALID_KID, "key ID");
  l.key_id = NULL; /* (NULL, 0) is an empty key ID, not a NULL pointer */
  REJECT_PUT(&l, WM_E_INVALID_KID, NULL);
  l = good(n++);
  l.key_id = bytes65;
  l.key_id_len = 65;
  REJECT_PUT(&l, WM_E_INVALID_KID, "key ID");
  l.key_id_len = 64;
  ACCEPT_PUT(&l); /* the first 64 bytes of bytes65 */
  l.key_id = bytes64;
  l.key_id_len = 64;
  ACCEPT_PUT(&l);
  l = good(n++);
  l.key_id = (const uint8_t *)"\x00";
  l.key_id_len = 1;
  ACCEPT_PUT(&l); /* a single NUL byte is a valid 1-byte key ID */

  visits = 0;
  CHECK_HR(wm_license_store_get(S, bytes65, 0, count_visit, NULL), WM_E_INVALID_KID);
  CHECK_MESSAGE(NULL);
  CHECK_HR(wm_license_store_get(S, NULL, 0, count_visit, NULL), WM_E_INVALID_KID);
  CHECK_HR(wm_license_store_get(S, bytes65, 65, count_visit, NULL), WM_E_INVALID_KID);
  CHECK(visits == 0);
  CHECK_HR(wm_license_store_get(S, bytes65, 64, count_visit, NULL), WM_S_OK);
  CHECK(visits == 1);
  CHECK_HR(wm_license_store_remove(S, bytes65, 0), WM_E_INVALID_KID);
  CHECK_HR(wm_license_store_remove(S, NULL, 0), WM_E_INVALID_KID);
  CHECK_HR(wm_license_store_remove(S, bytes65, 65), WM_E_INVALID_KID);
  CHECK(store_count() == expected_count);
  CHECK_HR(wm_license_store_remove(S, bytes65, 64), WM_S_OK);
  expected_count--;
  CHECK_HR(wm_license_store_remove(S, bytes65, 64), WM_E_NOT_FOUND);
  CHECK(store_count() == expected_count);

  /* ---- content keys: 1..64 bytes ---- */
  l = good(n++);
  l.content_key_len = 0;
  REJECT_PUT(&l, WM_E_INVALIDARG, "content key");
  l.content_key = NULL; /* (NULL, 0): empty, so invalid rather than a NULL pointer */
  REJECT_PUT(&l, WM_E_INVALIDARG, NULL);
  l.content_key = bytes65;
  l.content_key_len = 65;
  REJECT_PUT(&l, WM_E_INVALIDARG, "content key");
  l.content_key_len = 64;
  ACCEPT_PUT(&l);
  l = good(n++);
  l.content_key = bytes64;
  l.content_key_len = 1;
  ACCEPT_PUT(&l);

  /* ---- titles: UTF-8, at most 1024 bytes, NULL allowed ---- */
  l = good(n++);
  l.title = title1025;
  REJECT_PUT(&l, WM_E_INVALIDARG, "title");
  l.title = utf8_1025;
  REJECT_PUT(&l, WM_E_INVALIDARG, "title");
  l.title = title1024;
  ACCEPT_PUT(&l);
  l = good(n++);
  l.title = utf8_1024;
  ACCEPT_PUT(&l);
  {
    static const char *const bad_utf8[] = {
        "\xff\xfe",           /* never valid bytes */
        "ok then \x80",       /* stray continuation byte */
        "\xC3",               /* truncated 2-byte sequence */
        "\xE2\x82",           /* truncated 3-byte sequence */
        "\xC0\x80",           /* overlong NUL */
        "\xED\xA0\x80",       /* UTF-16 surrogate */
        "\xF4\x90\x80\x80",   /* above U+10FFFF */
    };
    for (i = 0; i < sizeof bad_utf8 / sizeof bad_utf8[0]; i++) {
      l = good(n++);
      l.title = bad_utf8[i];
      snprintf(note, sizeof note, " [bad UTF-8 title #%u]", (unsigned)i);
      REJECT_PUT(&l, WM_E_INVALIDARG, "title");
    }
    note[0] = '\0';
  }
  l = good(n++);
  l.title = "";
  ACCEPT_PUT(&l); /* an empty title is a title, not NULL */
  l = good(n++);
  l.title = NULL;
  ACCEPT_PUT(&l);
  l = good(n++);
  l.title = "\xF0\x9F\x8E\xB5 \xE6\x97\xA5\xE6\x9C\xAC";
  ACCEPT_PUT(&l);

  /* ---- dates ---- */
  l = good(n++);
  l.begin_date = 2000;
  l.expiration_date = 1999;
  REJECT_PUT(&l, WM_E_INVALIDARG, "expiration");
  l.expiration_date = 2000; /* expires when it begins: not before it */
  ACCEPT_PUT(&l);
  l = good(n++);
  l.begin_date = 2000;
  l.expiration_date = 0; /* never expires */
  ACCEPT_PUT(&l);
  l = good(n++);
  l.begin_date = -1;
  l.expiration_date = 0;
  REJECT_PUT(&l, WM_E_INVALIDARG, NULL);
  l = good(n++);
  l.expiration_date = -5;
  l.begin_date = -10;
  REJECT_PUT(&l, WM_E_INVALIDARG, NULL);
  l = good(n++);
  l.issued_at = -1;
  REJECT_PUT(&l, WM_E_INVALIDARG, NULL);
  l = good(n++);
  l.begin_date = INT64_MAX;
  l.expiration_date = INT64_MAX;
  l.issued_at = INT64_MAX;
  ACCEPT_PUT(&l);

  /* ---- rights bits ---- */
  {
    static const uint32_t unknown_bits[] = {0x400u, 0x80000000u, 0x4u, 0x800u, 0xFFFFFFFFu,
                                            WM_RIGHT_PLAYBACK | 0x400u};
    for (i = 0; i < sizeof unknown_bits / sizeof unknown_bits[0]; i++) {
      l = good(n++);
      l.rights = unknown_bits[i];
      snprintf(note, sizeof note, " [rights 0x%x]", (unsigned)unknown_bits[i]);
      REJECT_PUT(&l, WM_E_INVALIDARG, "rights");
    }
    note[0] = '\0';
  }
  l = good(n++);
  l.rights = WM_RIGHT_PLAYBACK | WM_RIGHT_COPY_TO_NON_SDMI_DEVICE | WM_RIGHT_COPY_TO_CD |
             WM_RIGHT_COPY_TO_SDMI_DEVICE | WM_RIGHT_ONE_TIME | WM_RIGHT_SAVE_STREAM_PROTECTED |
             WM_RIGHT_COPY | WM_RIGHT_COLLABORATIVE_PLAY | WM_RIGHT_BACKUP;
  CHECK(l.rights == 0x3FBu);
  ACCEPT_PUT(&l);
  l = good(n++);
  l.rights = 0;
  ACCEPT_PUT(&l);

  /* ---- play_count: -1 (unlimited) or >= 0 ---- */
  l = good(n++);
  l.play_count = -2;
  REJECT_PUT(&l, WM_E_INVALIDARG, "play_count");
  l.play_count = INT32_MIN;
  REJECT_PUT(&l, WM_E_INVALIDARG, "play_count");
  l.play_count = -1;
  ACCEPT_PUT(&l);
  l = good(n++);
  l.play_count = 0;
  ACCEPT_PUT(&l);
  l = good(n++);
  l.play_count = INT32_MAX;
  ACCEPT_PUT(&l);

  /* A rejected upsert leaves the existing license as it was. */
  {
    wm_license before = good(n++), bad;
    matcher m;
    ACCEPT_PUT(&before);
    bad = before;
    bad.title = "\xff";
    bad.play_count = 99;
    REJECT_UPSERT(&bad, WM_E_INVALIDARG, "title");
    memset(&m, 0, sizeof m);
    m.want = &before;
    CHECK_HR(wm_license_store_get(S, before.key_id, before.key_id_len, match_visit, &m), WM_S_OK);
    CHECK(m.calls == 1 && m.match == 1);
  }
  CHECK(store_count() == expected_count);

  /* ---- closed and made-up handles ---- */
  {
    wm_license_store *closed = NULL;
    static int not_a_store; /* the address of some other object */
    wm_license_store *const made_up[] = {
        (wm_license_store *)(uintptr_t)0x12340, (wm_license_store *)(uintptr_t)0x12345,
        (wm_license_store *)(void *)&not_a_store, (wm_license_store *)(uintptr_t)0x7FFFFFF0};
    wm_license_store *bad_handles[5];
    size_t h;
    REQUIRE_OK(wm_license_store_open(dir, &closed));
    CHECK(closed != S);
    c = SENTINEL_COUNT;
    CHECK_HR(wm_license_store_count(closed, &c), WM_S_OK);
    CHECK(c == expected_count);
    wm_license_store_close(closed);
    bad_handles[0] = closed;
    for (h = 0; h < 4; h++) {
      bad_handles[h + 1] = made_up[h];
      CHECK(made_up[h] != S); /* else the value is not made up: it is the live handle */
    }
    l = good(n++);
    for (h = 0; h < 5; h++) {
      wm_license_store *b = bad_handles[h];
      int failures_before = wmt_failures;
      visits = 0;
      CHECK_HR(wm_license_store_put(b, &l), WM_E_HANDLE);
      CHECK_MESSAGE("handle");
      CHECK_HR(wm_license_store_put_many(b, &l, 1), WM_E_HANDLE);
      CHECK_HR(wm_license_store_put_many(b, NULL, 0), WM_E_HANDLE);
      CHECK_HR(wm_license_store_get(b, l.key_id, l.key_id_len, count_visit, NULL), WM_E_HANDLE);
      CHECK_HR(wm_license_store_remove(b, l.key_id, l.key_id_len), WM_E_HANDLE);
      c = SENTINEL_COUNT;
      CHECK_HR(wm_license_store_count(b, &c), WM_E_HANDLE);
      CHECK(c == SENTINEL_COUNT);
      CHECK_HR(wm_license_store_for_each(b, count_visit, NULL), WM_E_HANDLE);
      CHECK(visits == 0);
      /* Closing a closed or made-up handle does nothing; neither does closing it twice. */
      wm_license_store_close(b);
      wm_license_store_close(b);
      CHECK_HR(wm_license_store_count(b, &c), WM_E_HANDLE);
      if (wmt_failures != failures_before) {
        fprintf(stderr, "  (the failures above are for the %s handle %p)\n", h == 0 ? "closed" : "made-up",
                (void *)b);
      }
    }
    /* None of that touched the live handle or the store. */
    CHECK(store_count() == expected_count);
    visits = 0;
    CHECK_HR(wm_license_store_get(S, l.key_id, l.key_id_len, count_visit, NULL), WM_E_NOT_FOUND);
    CHECK(visits == 0);
  }
  wm_license_store_close(NULL);

  /* A reopened store holds exactly the accepted licenses. */
  wm_license_store_close(S);
  wm_license_store_close(S); /* double close: nothing */
  c = SENTINEL_COUNT;
  CHECK_HR(wm_license_store_count(S, &c), WM_E_HANDLE);
  CHECK(c == SENTINEL_COUNT);
  REQUIRE_OK(wm_license_store_open(dir, &S));
  CHECK(store_count() == expected_count);
  visits = 0;
  CHECK_HR(wm_license_store_for_each(S, count_visit, NULL), WM_S_OK);
  CHECK((uint64_t)visits == expected_count);
  wm_license_store_close(S);

  wmt_rm_rf(dir);
  return wmt_finish("test_store_bad_input");
}
