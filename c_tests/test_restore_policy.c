/* The restore policy of the embedded License Management Service: one lineage may be restored
   onto at most 4 distinct devices (each store directory is a device); a device already counted
   restores again for free; a refusal is WM_E_RESTORE_FRAUD (with ERROR_WITHURL when the service
   has a help URL) and creates nothing; VERIFY_ONLY applies the same policy; a store created by a
   restore continues the lineage; WMLICENSE_RESTORE_DEVICE_LIMIT raises the limit. */
#include "restorer_util.h"

#define NL 3

static wm_license lic[NL];
static char kids[NL][32];
static uint8_t keys[NL][16];

static void restore_into(wm_backup_restorer *r, wmr_recorder *rec, const char *store, uint32_t flags) {
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, store), WM_S_OK);
  CHECK_HR(wmr_run_restore(r, rec, flags), WM_S_OK);
  CHECK_EVENTS(rec, WM_OPERATION_RESTORE);
}

static void expect_granted(wmr_recorder *rec, const char *store) {
  wmr_dump_t d;
  size_t i;
  CHECK_SEQ(rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(rec, WM_S_OK, NL, NL, 0);
  CHECK_HR(wmr_dump(store, &d), WM_S_OK);
  CHECK(d.n == NL);
  for (i = 0; i < NL && i < d.n; i++) CHECK(wmr_lic_is(&d.v[i], &lic[i]));
  wmr_dump_free(&d);
}

/* A refusal without a help URL: BEGIN, CONNECTING, DISCONNECTING, END; nothing created. */
static void expect_refused(wmr_recorder *rec, const char *home, const char *name) {
  char path[700];
  CHECK_SEQ(rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_END);
  CHECK_HR(wmr_end(rec).hr, WM_E_RESTORE_FRAUD);
  CHECK(wmr_end(rec).processed == 0);
  CHECK(wmr_count_status(rec, WM_STATUS_BACKUPRESTORE_PROGRESS) == 0);
  snprintf(path, sizeof path, "%s/%s", home, name);
  CHECK(!wmr_exists(path));
  /* Nothing beside the place but the pending device identity a retry will present again: no
     staging directory left. */
  {
    char prefix[300];
    snprintf(path, sizeof path, "%s/.%s.pending", home, name);
    snprintf(prefix, sizeof prefix, ".%s.", name);
    CHECK(wmr_dir_count_prefix(home, prefix) == wmr_exists(path));
  }
}

int main(void) {
  char home[512], src[600], bdir[600], bdir2[600], stores[700], path[800];
  wmr_recorder rec;
  wm_backup_restorer *r;
  unsigned i;

  wmr_fresh_home(home, sizeof home, "policy");
  unsetenv("WMLICENSE_RESTORE_DEVICE_LIMIT");
  unsetenv("WMLICENSE_SERVICE_HELP_URL");
  snprintf(src, sizeof src, "%s/source", home);
  snprintf(bdir, sizeof bdir, "%s/backup", home);
  snprintf(bdir2, sizeof bdir2, "%s/backup-gen2", home);
  snprintf(stores, sizeof stores, "%s/stores", home);
  CHECK(mkdir(stores, 0700) == 0);

  for (i = 0; i < NL; i++) {
    wmt_make_license(&lic[i], i + 1, kids[i], keys[i], WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
    lic[i].title = i == 1 ? "Second \xE2\x99\xAA" : NULL;
  }
  REQUIRE_OK(wmr_put(src, lic, NL));

  wmr_init(&rec);
  r = wmr_create(&rec);
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, src), WM_S_OK);
  CHECK_HR(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir), WM_S_OK);
  CHECK_HR(wmr_run_backup(r, &rec, 0), WM_S_OK);
  CHECK_EVENTS(&rec, WM_OPERATION_BACKUP);
  CHECK_END(&rec, WM_S_OK, NL, NL, 0);
  CHECK_HR(wmr_set_str(r, WM_PROP_RESTORE_PATH, bdir), WM_S_OK);

  /* Four distinct new stores: granted. */
  for (i = 1; i <= 4; i++) {
    snprintf(path, sizeof path, "%s/store-%u", stores, i);
    restore_into(r, &rec, path, WM_RESTORE_INDIVIDUALIZE);
    expect_granted(&rec, path);
  }

  /* A fifth: refused, and its directory is not created. */
  snprintf(path, sizeof path, "%s/store-5", stores);
  restore_into(r, &rec, path, WM_RESTORE_INDIVIDUALIZE);
  expect_refused(&rec, stores, "store-5");
  /* The refusal is final: trying the same fifth store again is refused again. */
  restore_into(r, &rec, path, WM_RESTORE_INDIVIDUALIZE);
  expect_refused(&rec, stores, "store-5");

  /* Store #2 is a device already counted: restoring onto it again is free. */
  snprintf(path, sizeof path, "%s/store-2", stores);
  restore_into(r, &rec, path, 0);
  CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_BACKUPRESTORE_PROGRESS, WM_STATUS_BACKUPRESTORE_END);
  CHECK_END(&rec, WM_S_OK, 0, NL, NL); /* every license is already there, as new */

  /* With a help URL: ERROR_WITHURL carries it, before END. */
  setenv("WMLICENSE_SERVICE_HELP_URL", "https://help.example/restore", 1);
  snprintf(path, sizeof path, "%s/store-6", stores);
  restore_into(r, &rec, path, WM_RESTORE_INDIVIDUALIZE);
  CHECK_SEQ(&rec, WM_STATUS_BACKUPRESTORE_BEGIN, WM_STATUS_BACKUPRESTORE_CONNECTING,
            WM_STATUS_BACKUPRESTORE_DISCONNECTING, WM_STATUS_ERROR_WITHURL, WM_STATUS_BACKUPRESTORE_END);
  {
    const wmr_event *u = wmr_find_status(&rec, WM_STATUS_ERROR_WITHURL);
    CHECK(u != NULL);
    if (u) {
      CHECK_HR(u->hr, WM_E_RESTORE_FRAUD);
      CHECK(u->message != NULL && strcmp(u->message, "https://help.example/restore") == 0);
      CHECK(u->operation == WM_OPERATION_RESTORE);
    }
  }
  CHECK_HR(wmr_end(&rec).hr, WM_E_RESTORE_FRAUD);
  CHECK(!wmr_exists(path));
  CHECK(wmr_dir_count_prefix(stores, ".store-6.") == 1); /* only .store-6.pending */
  unsetenv("WMLICENSE_SERVICE_HELP_URL");

  /* VERIFY_ONLY into a seventh new store: the same refusal, nothing created. */
  snprintf(path, sizeof path, "%s/store-7", stores);
  restore_into(r, &rec, path, WM_RESTORE_VERIFY_ONLY | WM_RESTORE_INDIVIDUALIZE);
  expect_refused(&rec, stores, "store-7");
  snprintf(path, sizeof path, "%s/.store-7.pending", stores);
  CHECK(!wmr_exists(path)); /* a dry run keeps no device identity */
  /* VERIFY_ONLY onto a counted device is granted. */
  snprintf(path, sizeof path, "%s/store-3", stores);
  restore_into(r, &rec, path, WM_RESTORE_VERIFY_ONLY);
  CHECK_HR(wmr_end(&rec).hr, WM_S_OK);

  /* Lineage: back up restored store #1 and restore that second-generation backup into a new
     store: still refused, the chain counts against the first lineage. */
  snprintf(path, sizeof path, "%s/store-1", stores);
  CHECK_HR(wmr_set_str(r, WM_PROP_STORE_PATH, path), WM_S_OK);
  CHECK_HR(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir2), WM_S_OK);
  CHECK_HR(wmr_run_backup(r, &rec, 0), WM_S_OK);
  CHECK_EVENTS(&rec, WM_OPERATION_BACKUP);
  CHECK_END(&rec, WM_S_OK, NL, NL, 0);
  CHECK_HR(wmr_set_str(r, WM_PROP_RESTORE_PATH, bdir2), WM_S_OK);
  snprintf(path, sizeof path, "%s/store-8", stores);
  restore_into(r, &rec, path, WM_RESTORE_INDIVIDUALIZE);
  expect_refused(&rec, stores, "store-8");
  /* ...while a counted device (store #4) may restore the second-generation backup. */
  snprintf(path, sizeof path, "%s/store-4", stores);
  restore_into(r, &rec, path, 0);
  CHECK_HR(wmr_end(&rec).hr, WM_S_OK);

  /* A higher limit, read at each restore: the next new store works. */
  setenv("WMLICENSE_RESTORE_DEVICE_LIMIT", "6", 1);
  snprintf(path, sizeof path, "%s/store-9", stores);
  restore_into(r, &rec, path, WM_RESTORE_INDIVIDUALIZE);
  expect_granted(&rec, path);
  /* The first-generation backup counts against the same lineage: device 6 of 6. */
  CHECK_HR(wmr_set_str(r, WM_PROP_RESTORE_PATH, bdir), WM_S_OK);
  snprintf(path, sizeof path, "%s/store-10", stores);
  restore_into(r, &rec, path, WM_RESTORE_INDIVIDUALIZE);
  expect_granted(&rec, path);
  snprintf(path, sizeof path, "%s/store-11", stores);
  restore_into(r, &rec, path, WM_RESTORE_INDIVIDUALIZE);
  expect_refused(&rec, stores, "store-11");
  unsetenv("WMLICENSE_RESTORE_DEVICE_LIMIT");

  wm_backup_restorer_destroy(r);
  wmr_free(&rec);
  wmt_rm_rf(home);
  return wmt_finish("test_restore_policy");
}
