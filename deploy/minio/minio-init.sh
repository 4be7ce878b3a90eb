#!/bin/sh
# Runs once in the minio-init service (minio/mc image) before the API and worker start.
#
# 1. Creates the audit bucket with Object Lock (WORM). Object Lock can only be switched on when a
#    bucket is created, so a bucket that already exists without it makes this script fail rather
#    than let the audit trail run on mutable storage.
# 2. Sets the bucket's default retention (the app also sets mode and retain-until on every put).
# 3. Creates the app's own account with a policy that can write and read audit objects and nothing
#    else: no delete, no retention change, no governance bypass. The app never holds root keys.
#
# Safe to run again: every step is idempotent.
set -eu

: "${MINIO_ENDPOINT:?}" "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${AUDIT_BUCKET:?}" "${AUDIT_S3_ACCESS_KEY:?}" "${AUDIT_S3_SECRET_KEY:?}"
retention_mode="${AUDIT_RETENTION_MODE:-GOVERNANCE}"
retention_days="${AUDIT_RETENTION_DAYS:-365}"
alias_name=payorch
policy_name=payorch-audit-writer
target="${alias_name}/${AUDIT_BUCKET}"

mc alias set "${alias_name}" "${MINIO_ENDPOINT}" "${MINIO_ROOT_USER}" "${MINIO_ROOT_PASSWORD}" >/dev/null

mc mb --ignore-existing --with-lock "${target}"
# Fails with an error on a bucket that has no Object Lock configuration: that is the check.
mc retention set --default "${retention_mode}" "${retention_days}d" "${target}"

policy_file="$(mktemp)"
trap 'rm -f "${policy_file}"' EXIT
cat >"${policy_file}" <<POLICY
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:GetBucketObjectLockConfiguration"],
      "Resource": ["arn:aws:s3:::${AUDIT_BUCKET}"]
    },
    {
      "Effect": "Allow",
      "Action": [
        "s3:PutObject",
        "s3:PutObjectRetention",
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:GetObjectRetention"
      ],
      "Resource": ["arn:aws:s3:::${AUDIT_BUCKET}/*"]
    }
  ]
}
POLICY

mc admin policy create "${alias_name}" "${policy_name}" "${policy_file}"
mc admin user add "${alias_name}" "${AUDIT_S3_ACCESS_KEY}" "${AUDIT_S3_SECRET_KEY}" >/dev/null

# `attach` refuses a policy that is already attached; on a re-run that is success, not an error.
if ! attach_output="$(mc admin policy attach "${alias_name}" "${policy_name}" --user "${AUDIT_S3_ACCESS_KEY}" 2>&1)"; then
  case "${attach_output}" in
    *"already"*) ;;
    *) echo "${attach_output}" >&2; exit 1 ;;
  esac
fi

echo "audit bucket ${AUDIT_BUCKET}: Object Lock on, default ${retention_mode} ${retention_days}d; account ${AUDIT_S3_ACCESS_KEY} has ${policy_name}"
