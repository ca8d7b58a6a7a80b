/* The license store round trip: put, get, upsert, remove, count, persistence across reopen,
   put_many all-or-none, and the default store under $WMLICENSE_HOME. */
#include "test_util.h"

typedef struct {
  int calls;
  uint8_t key_id[64];
  size_t key_id_len;
  uint8_t content_key[64];
  size_t content_key_len;
  char title[1100];
  int has_title;
  uint32_t rights;
  int32_t play_count;
  int64_t begin_date, expiration_date, issued_at;
} captured;

static int32_t capture(const wm_license *l, void *ctx) {
  captured *c = (captured *)ctx;
  c->calls++;
  memcpy(c->key_id, l->key_id, l->key_id_len);
  c->key_id_len = l->key_id_len;
  memcpy(c->content_key, l->content_key, l->content_key_len);
  c->content_key_len = l->content_key_len;
  c->has_title = l->title != NULL;
  if (l->title) snprintf(c->title, sizeof c->title, "%s", l->title);
  c->rights = l->rights;
  c->play_count = l->play_count;
  c->begin_date = l->begin_date;
  c->expiration_date = l->expiration_date;
  c->issued_at = l->issued_at;
  return 0;
}

static void check_same(const captured *c, const wm_license *l) {
  CHECK(c->calls == 1);
  CHECK(c->key_id_len == l->key_id_len && memcmp(c->key_id, l->key_id, l->key_id_len) == 0);
  CHECK(c->content_key_len == l->content_key_len &&
        memcmp(c->content_key, l->content_key, l->content_key_len) == 0);
  CHECK(c->has_title == (l->title != NULL));
  if (l->title) CHECK(strcmp(c->title, l->title) == 0);
  CHECK(c->rights == l->rights);
  CHECK(c->play_count == l->play_count);
  CHECK(c->begin_date == l->begin_date);
  CHECK(c->expiration_date == l->expiration_date);
  CHECK(c->issued_at == l->issued_at);
}

int main(void) {
  char dir[512];
  wm_license_store *s = NULL;
  uint64_t count = 99;
  static const uint8_t binary_kid[5] = {0x00, 0xFF, 0x10, 0x00, 0x7F}; /* NULs inside */
  static const uint8_t key64[64] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
                                     21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37,
                                     38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54,
                                     55, 56, 57, 58, 59, 60, 61, 62, 63, 64};
  wm_license a, b;
  captured got;

  wmt_temp_dir(dir, sizeof dir, "store");
  REQUIRE_OK(wm_license_store_open(dir, &s));
  CHECK(s != NULL);
  CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
  CHECK(count == 0);

  memset(&a, 0, sizeof a);
  a.key_id = binary_kid;
  a.key_id_len = sizeof binary_kid;
  a.content_key = key64;
  a.content_key_len = sizeof key64;
  a.title = "Kind of Blue \xE2\x80\x94 So What"; /* UTF-8 em dash */
  a.rights = WM_RIGHT_PLAYBACK | WM_RIGHT_COPY_TO_CD | WM_RIGHT_BACKUP;
  a.play_count = 3;
  a.begin_date = 1600000000;
  a.expiration_date = 1900000000;
  a.issued_at = 1650000000;
  CHECK_HR(wm_license_store_put(s, &a), WM_S_OK);

  memset(&b, 0, sizeof b);
  b.key_id = (const uint8_t *)"k";
  b.key_id_len = 1;
  b.content_key = (const uint8_t *)"\x01";
  b.content_key_len = 1;
  b.title = NULL;
  b.rights = 0;
  b.play_count = -1;
  CHECK_HR(wm_license_store_put(s, &b), WM_S_OK);

  CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
  CHECK(count == 2);

  memset(&got, 0, sizeof got);
  CHECK_HR(wm_license_store_get(s, binary_kid, sizeof binary_kid, capture, &got), WM_S_OK);
  check_same(&got, &a);
  memset(&got, 0, sizeof got);
  CHECK_HR(wm_license_store_get(s, (const uint8_t *)"k", 1, capture, &got), WM_S_OK);
  check_same(&got, &b);

  /* A missing key ID: WM_E_NOT_FOUND, and the visitor is not called. */
  memset(&got, 0, sizeof got);
  CHECK_HR(wm_license_store_get(s, (const uint8_t *)"nope", 4, capture, &got), WM_E_NOT_FOUND);
  CHECK(got.calls == 0);

  /* Upsert: same key ID replaces every field. */
  b.title = "replaced";
  b.play_count = 7;
  b.issued_at = 5;
  CHECK_HR(wm_license_store_put(s, &b), WM_S_OK);
  CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
  CHECK(count == 2);
  memset(&got, 0, sizeof got);
  CHECK_HR(wm_license_store_get(s, (const uint8_t *)"k", 1, capture, &got), WM_S_OK);
  check_same(&got, &b);

  /* Persistence across close and reopen. */
  wm_license_store_close(s);
  s = NULL;
  REQUIRE_OK(wm_license_store_open(dir, &s));
  CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
  CHECK(count == 2);
  memset(&got, 0, sizeof got);
  CHECK_HR(wm_license_store_get(s, binary_kid, sizeof binary_kid, capture, &got), WM_S_OK);
  check_same(&got, &a);

  /* Remove, then remove again: WM_E_NOT_FOUND. */
  CHECK_HR(wm_license_store_remove(s, (const uint8_t *)"k", 1), WM_S_OK);
  CHECK_HR(wm_license_store_remove(s, (const uint8_t *)"k", 1), WM_E_NOT_FOUND);
  CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
  CHECK(count == 1);

  /* put_many: one transaction; one bad license stores none of them. */
  {
    wm_license many[3];
    char kids[3][32];
    uint8_t keys[3][16];
    unsigned i;
    for (i = 0; i < 3; i++) wmt_make_license(&many[i], i, kids[i], keys[i], WM_RIGHT_PLAYBACK);
    many[2].content_key_len = 0; /* invalid */
    CHECK_HR(wm_license_store_put_many(s, many, 3), WM_E_INVALIDARG);
    CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
    CHECK(count == 1);
    many[2].content_key_len = 16;
    CHECK_HR(wm_license_store_put_many(s, many, 3), WM_S_OK);
    CHECK_HR(wm_license_store_count(s, &count), WM_S_OK);
    CHECK(count == 4);
    CHECK_HR(wm_license_store_put_many(s, NULL, 0), WM_S_OK);
    for (i = 0; i < 3; i++) {
      memset(&got, 0, sizeof got);
      CHECK_HR(wm_license_store_get(s, many[i].key_id, many[i].key_id_len, capture, &got), WM_S_OK);
      check_same(&got, &many[i]);
    }
  }
  wm_license_store_close(s);

  /* The default store: NULL path opens $WMLICENSE_HOME. */
  {
    char home[512], again[512];
    wm_license_store *d = NULL;
    wmt_temp_dir(home, sizeof home, "home");
    snprintf(again, sizeof again, "%s", home);
    setenv("WMLICENSE_HOME", home, 1);
    REQUIRE_OK(wm_license_store_open(NULL, &d));
    CHECK_HR(wm_license_store_put(d, &a), WM_S_OK);
    wm_license_store_close(d);
    REQUIRE_OK(wm_license_store_open(again, &d));
    CHECK_HR(wm_license_store_count(d, &count), WM_S_OK);
    CHECK(count == 1);
    wm_license_store_close(d);
    wmt_rm_rf(home);
  }

  wmt_rm_rf(dir);
  return wmt_finish("test_store");
}
