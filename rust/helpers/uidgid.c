// SPDX-License-Identifier: GPL-2.0

#include <linux/cred.h>
#include <linux/uidgid.h>

__rust_helper kuid_t rust_helper_make_kuid(struct user_namespace *from, uid_t uid)
{
	return make_kuid(from, uid);
}

__rust_helper kgid_t rust_helper_make_kgid(struct user_namespace *from, gid_t gid)
{
	return make_kgid(from, gid);
}

__rust_helper bool rust_helper_uid_valid(kuid_t uid)
{
	return uid_valid(uid);
}

__rust_helper bool rust_helper_gid_valid(kgid_t gid)
{
	return gid_valid(gid);
}

__rust_helper bool rust_helper_gid_eq(kgid_t left, kgid_t right)
{
	return gid_eq(left, right);
}

__rust_helper uid_t rust_helper_from_kuid_munged(struct user_namespace *to, kuid_t uid)
{
	return from_kuid_munged(to, uid);
}

__rust_helper gid_t rust_helper_from_kgid_munged(struct user_namespace *to, kgid_t gid)
{
	return from_kgid_munged(to, gid);
}
