/* A callback may wait for, or destroy, ANOTHER restorer whose operation is still queued behind
   the callback's own, even with a pool of one worker: the pool lends itself a thread for the
   wait instead of deadlocking. */
#include "test_util.h"

typedef struct {
  wm_backup_restorer *other;
  wm_hresult start_hr, wait_hr;
  int done;
  wm_hresult other_end;
  int other_ends;
} ctx_t;

static void on_other(const wm_event *e, void *context) {
  ctx_t *c = (ctx_t *)context;
  if (e->status == WM_STATUS_BACKUPRESTORE_END) {
    c->other_end = e->hr;
    c->other_ends++;
  }
}

static int destroy_mode = 0;
static int chain_mode = 0;
static wm_backup_restorer *first_restorer = NULL;
static int first_ends = 0;

static void on_first(const wm_event *e, void *context) {
  ctx_t *c = (ctx_t *)context;
  if (chain_mode) {
    /* On the first END: start this restorer's next operation, then another restorer's, and
       wait for the latter (its job is queued after the chained one). */
    if (e->status != WM_STATUS_BACKUPRESTORE_END || first_ends++ > 0) return;
    c->start_hr = wm_backup_restorer_backup(first_restorer, WM_BACKUP_OVERWRITE);
    if (c->start_hr == WM_S_OK) c->start_hr = wm_backup_restorer_backup(c->other, WM_BACKUP_OVERWRITE);
    c->wait_hr = wm_backup_restorer_wait(c->other, 20000); /* WM_S_FALSE = deadlocked */
    c->done = 1;
    return;
  }
  if (e->status != WM_STATUS_BACKUPRESTORE_BEGIN) return;
  /* The other restorer's job is queued behind this one, which holds the only worker. */
  c->start_hr = wm_backup_restorer_backup(c->other, WM_BACKUP_OVERWRITE);
  if (destroy_mode) {
    wm_backup_restorer_destroy(c->other); /* cancels and waits for its END */
    c->wait_hr = WM_S_OK;
  } else {
    c->wait_hr = wm_backup_restorer_wait(c->other, 20000); /* WM_S_FALSE = deadlocked */
  }
  c->done = 1;
}

static void set_path(wm_backup_restorer *r, const char *name, const char *value) {
  REQUIRE_OK(wm_backup_restorer_set_prop(r, name, WM_TYPE_STRING, (const uint8_t *)value, (uint32_t)strlen(value)));
}

static void run_case(const char *home, int destroy, int chain) {
  char store[600], b1[600], b2[600];
  wm_license_store *s = NULL;
  wm_license l;
  char kid[32];
  uint8_t key[16];
  wm_backup_restorer *first = NULL;
  static ctx_t c;
  memset(&c, 0, sizeof c);
  destroy_mode = destroy;
  chain_mode = chain;
  first_ends = 0;
  snprintf(store, sizeof store, "%s/store", home);
  snprintf(b1, sizeof b1, "%s/b1", home);
  snprintf(b2, sizeof b2, "%s/b2", home);
  REQUIRE_OK(wm_license_store_open(store, &s));
  wmt_make_license(&l, 7, kid, key, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
  REQUIRE_OK(wm_license_store_put(s, &l));
  wm_license_store_close(s);

  REQUIRE_OK(wm_backup_restorer_create(on_other, &c, &c.other));
  set_path(c.other, WM_PROP_STORE_PATH, store);
  set_path(c.other, WM_PROP_BACKUP_PATH, b2);
  REQUIRE_OK(wm_backup_restorer_create(on_first, &c, &first));
  first_restorer = first;
  set_path(first, WM_PROP_STORE_PATH, store);
  set_path(first, WM_PROP_BACKUP_PATH, b1);
  REQUIRE_OK(wm_backup_restorer_backup(first, WM_BACKUP_OVERWRITE));
  CHECK_HR(wm_backup_restorer_wait(first, 60000), WM_S_OK);
  if (chain) CHECK(first_ends == 2); /* the chained backup ended too */
  CHECK(c.done == 1);
  CHECK_HR(c.start_hr, WM_S_OK);
  CHECK_HR(c.wait_hr, WM_S_OK);
  CHECK(c.other_ends == 1);
  if (destroy) {
    CHECK(c.other_end == WM_S_OK || c.other_end == WM_E_OPERATION_CANCELED);
  } else {
    CHECK_HR(c.other_end, WM_S_OK);
    wm_backup_restorer_destroy(c.other);
  }
  wm_backup_restorer_destroy(first);
}

int main(void) {
  char home[512];
  wmt_temp_dir(home, sizeof home, "cbwait");
  setenv("WMLICENSE_HOME", home, 1);
  setenv("WMLICENSE_WORKERS", "1", 1); /* before the first restorer: the pool reads it once */
  run_case(home, 0, 0);
  run_case(home, 1, 0);
  run_case(home, 0, 1);
  wmt_rm_rf(home);
  return wmt_finish("test_callback_waits");
}
