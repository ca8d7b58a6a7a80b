/* wm_backup_restorer_last_result (SPEC §4.1): the outcome of the last operation that finished,
   without tracking events. Before any operation finished: WM_S_FALSE with operation 0 and every
   figure 0. After a backup: END's code and figures. While the next one runs (read from its
   BEGIN): still the previous one's. Inside END's callback: that END's. A failed restore: END's
   failure code. A start refused by the call itself (BACKUP_EXISTS) finishes nothing and changes
   nothing. A struct_size smaller than sizeof(wm_result) is WM_E_INVALIDARG and the struct is
   left alone; a larger one (a later version's caller) gets this version's fields and nothing
   beyond them is written. NULL out: WM_E_POINTER; a destroyed handle: WM_E_HANDLE. */
#include "test_util.h"

#include <stdint.h>

typedef struct {
  wm_backup_restorer *r;
  /* What the callback saw: at BEGIN and at END, the call's code and the record. */
  wm_hresult begin_hr, end_hr;
  wm_result at_begin, at_end;
  /* END's own figures, to compare with the record. */
  wm_hresult end_event_hr;
  int end_operation;
  uint64_t end_processed, end_total, end_skipped;
} seen_t;

static void on_event(const wm_event *e, void *context) {
  seen_t *s = (seen_t *)context;
  if (e->status == WM_STATUS_BACKUPRESTORE_BEGIN) {
    memset(&s->at_begin, 0xEE, sizeof s->at_begin);
    s->at_begin.struct_size = sizeof s->at_begin;
    s->begin_hr = wm_backup_restorer_last_result(s->r, &s->at_begin);
  } else if (e->status == WM_STATUS_BACKUPRESTORE_END) {
    memset(&s->at_end, 0xEE, sizeof s->at_end);
    s->at_end.struct_size = sizeof s->at_end;
    s->end_hr = wm_backup_restorer_last_result(s->r, &s->at_end);
    s->end_event_hr = e->hr;
    s->end_operation = (int)e->operation;
    s->end_processed = e->processed;
    s->end_total = e->total;
    s->end_skipped = e->skipped;
  }
}

static wm_hresult set_str(wm_backup_restorer *r, const char *name, const char *value) {
  return wm_backup_restorer_set_prop(r, name, WM_TYPE_STRING, (const uint8_t *)value, (uint32_t)strlen(value));
}

static wm_result fresh_result(void) {
  wm_result res;
  memset(&res, 0xEE, sizeof res);
  res.struct_size = sizeof res;
  return res;
}

int main(void) {
  char home[512], store[600], backup[600], missing[600];
  seen_t seen;
  wm_license_store *st = NULL;
  wm_license l;
  char kid[32];
  uint8_t key[16];
  unsigned i;
  wm_result res, untouched;
  struct {
    wm_result result;
    unsigned char beyond[32];
  } later;
  size_t k;
  int beyond_intact;

  wmt_temp_dir(home, sizeof home, "last-result");
  setenv("WMLICENSE_HOME", home, 1);
  snprintf(store, sizeof store, "%s/store", home);
  snprintf(backup, sizeof backup, "%s/backup", home);
  snprintf(missing, sizeof missing, "%s/no-backup-here", home);

  /* Three licenses, one of which may not be backed up. */
  REQUIRE_OK(wm_license_store_open(store, &st));
  for (i = 0; i < 3; i++) {
    wmt_make_license(&l, i, kid, key, i == 1 ? WM_RIGHT_PLAYBACK : WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
    REQUIRE_OK(wm_license_store_put(st, &l));
  }
  wm_license_store_close(st);

  memset(&seen, 0, sizeof seen);
  REQUIRE_OK(wm_backup_restorer_create(on_event, &seen, &seen.r));

  /* Nothing finished yet. */
  res = fresh_result();
  CHECK_HR(wm_backup_restorer_last_result(seen.r, &res), WM_S_FALSE);
  CHECK(res.struct_size == sizeof res);
  CHECK(res.operation == WM_OPERATION_NONE && (int)res.operation == 0);
  CHECK(res.hr == WM_S_OK);
  CHECK(res.processed == 0 && res.total == 0 && res.skipped == 0);
  CHECK(res.devices_used == 0 && res.device_limit == 0);

  /* Bad arguments: nothing written. */
  CHECK_HR(wm_backup_restorer_last_result(seen.r, NULL), WM_E_POINTER);
  CHECK_HR(wm_backup_restorer_last_result(NULL, &res), WM_E_POINTER);
  memset(&res, 0xEE, sizeof res);
  res.struct_size = sizeof res - 1;
  untouched = res;
  CHECK_HR(wm_backup_restorer_last_result(seen.r, &res), WM_E_INVALIDARG);
  CHECK(memcmp(&res, &untouched, sizeof res) == 0);
  res.struct_size = 0;
  CHECK_HR(wm_backup_restorer_last_result(seen.r, &res), WM_E_INVALIDARG);

  /* A backup: the record is END's, and END's callback reads it already. */
  REQUIRE_OK(set_str(seen.r, WM_PROP_STORE_PATH, store));
  REQUIRE_OK(set_str(seen.r, WM_PROP_BACKUP_PATH, backup));
  REQUIRE_OK(wm_backup_restorer_backup(seen.r, 0));
  REQUIRE_OK(wm_backup_restorer_wait(seen.r, WM_INFINITE));
  CHECK_HR(seen.begin_hr, WM_S_FALSE); /* at BEGIN of the first operation: none finished */
  CHECK(seen.at_begin.operation == WM_OPERATION_NONE);
  CHECK_HR(seen.end_hr, WM_S_OK);
  CHECK(seen.at_end.operation == WM_OPERATION_BACKUP);
  CHECK(seen.at_end.hr == WM_S_OK && seen.end_event_hr == WM_S_OK);
  CHECK(seen.at_end.processed == 2 && seen.at_end.total == 3 && seen.at_end.skipped == 1);
  res = fresh_result();
  CHECK_HR(wm_backup_restorer_last_result(seen.r, &res), WM_S_OK);
  CHECK(res.operation == WM_OPERATION_BACKUP);
  CHECK(res.hr == seen.end_event_hr);
  CHECK(res.processed == seen.end_processed && res.total == seen.end_total && res.skipped == seen.end_skipped);
  CHECK(res.devices_used == 0 && res.device_limit == 0);

  /* Refused by the call itself: no operation ran, the record stays. */
  CHECK_HR(wm_backup_restorer_backup(seen.r, 0), WM_E_BACKUP_EXISTS);
  res = fresh_result();
  CHECK_HR(wm_backup_restorer_last_result(seen.r, &res), WM_S_OK);
  CHECK(res.operation == WM_OPERATION_BACKUP && res.hr == WM_S_OK && res.processed == 2);

  /* A restore that fails: at its BEGIN the record is still the backup's; then END's failure. */
  REQUIRE_OK(set_str(seen.r, WM_PROP_RESTORE_PATH, missing));
  REQUIRE_OK(wm_backup_restorer_restore(seen.r, 0));
  REQUIRE_OK(wm_backup_restorer_wait(seen.r, WM_INFINITE));
  CHECK_HR(seen.begin_hr, WM_S_OK);
  CHECK(seen.at_begin.operation == WM_OPERATION_BACKUP && seen.at_begin.processed == 2);
  CHECK(seen.end_event_hr == WM_E_FILE_NOT_FOUND);
  CHECK(seen.end_operation == WM_OPERATION_RESTORE);
  res = fresh_result();
  CHECK_HR(wm_backup_restorer_last_result(seen.r, &res), WM_S_OK);
  CHECK(res.operation == WM_OPERATION_RESTORE);
  CHECK(res.hr == WM_E_FILE_NOT_FOUND);
  CHECK(res.processed == 0 && res.total == 0 && res.skipped == 0);

  /* A later version's caller: a larger struct gets this version's fields, nothing beyond. */
  memset(&later, 0xEE, sizeof later);
  later.result.struct_size = (uint32_t)sizeof later;
  CHECK_HR(wm_backup_restorer_last_result(seen.r, &later.result), WM_S_OK);
  CHECK(later.result.struct_size == sizeof later);
  CHECK(later.result.operation == WM_OPERATION_RESTORE && later.result.hr == WM_E_FILE_NOT_FOUND);
  beyond_intact = 1;
  for (k = 0; k < sizeof later.beyond; k++) beyond_intact &= later.beyond[k] == 0xEE;
  CHECK(beyond_intact);

  /* A synchronous use: start, wait, read (here: a backup over the first one). */
  REQUIRE_OK(wm_backup_restorer_backup(seen.r, WM_BACKUP_OVERWRITE));
  REQUIRE_OK(wm_backup_restorer_wait(seen.r, WM_INFINITE));
  res = fresh_result();
  CHECK_HR(wm_backup_restorer_last_result(seen.r, &res), WM_S_OK);
  CHECK(res.operation == WM_OPERATION_BACKUP && res.hr == WM_S_OK);
  CHECK(res.processed == 2 && res.total == 3 && res.skipped == 1);

  wm_backup_restorer_destroy(seen.r);
  res = fresh_result();
  CHECK_HR(wm_backup_restorer_last_result(seen.r, &res), WM_E_HANDLE);

  wmt_rm_rf(home);
  return wmt_finish("test_last_result");
}
