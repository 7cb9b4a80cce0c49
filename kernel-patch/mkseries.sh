#!/bin/sh
# Regenerate kernel-patch/*.patch and kernel-patch/series from a Redox kernel checkout whose
# branch holds the series as commits on top of the commit the series targets.
#
#   kernel-patch/mkseries.sh REDOX_KERNEL=/path/to/kernel [BASE=<commit>] [BRANCH=<rev>]
#   make redox-series REDOX_KERNEL=/path/to/kernel
#
# BASE defaults to the Redox commit the series is made for, BRANCH to the checkout's HEAD. The
# output depends only on the commits' messages and trees: author, date, commit ids, signature,
# abbreviation length and diff settings are fixed here, so regenerating from the same commits
# gives the same bytes. The branch must only touch Redox's own files: the glue lives in this
# repository (kernel-patch/glue/), so a commit that adds a file is refused.
set -eu

BASE=663e66410bac71cd7e335501118a7cee746d15f9
BRANCH=HEAD
REDOX_KERNEL=
for arg in "$@"; do
    case "$arg" in
    REDOX_KERNEL=*) REDOX_KERNEL=${arg#REDOX_KERNEL=} ;;
    BASE=*) BASE=${arg#BASE=} ;;
    BRANCH=*) BRANCH=${arg#BRANCH=} ;;
    *)
        echo "mkseries: unknown argument '$arg' (REDOX_KERNEL=, BASE=, BRANCH=)" >&2
        exit 2
        ;;
    esac
done
if [ -z "$REDOX_KERNEL" ]; then
    echo "mkseries: give REDOX_KERNEL=<Redox kernel checkout with the series committed>" >&2
    exit 2
fi

out=$(cd "$(dirname "$0")" && pwd)
git_k() { git -C "$REDOX_KERNEL" "$@"; }

git_k rev-parse --verify --quiet "$BASE^{commit}" >/dev/null || {
    echo "mkseries: $REDOX_KERNEL has no commit $BASE" >&2
    exit 1
}
git_k merge-base --is-ancestor "$BASE" "$BRANCH" || {
    echo "mkseries: $BRANCH does not build on $BASE" >&2
    exit 1
}
count=$(git_k rev-list --count "$BASE..$BRANCH")
if [ "$count" -eq 0 ]; then
    echo "mkseries: no commits between $BASE and $BRANCH" >&2
    exit 1
fi
added=$(git_k diff --no-renames --diff-filter=A --name-only "$BASE" "$BRANCH")
if [ -n "$added" ]; then
    echo "mkseries: the branch adds files; the glue belongs in kernel-patch/glue/:" >&2
    echo "$added" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# Fixed identity and date for every patch header; the commits' own are not kept.
GIT_COMMITTER_NAME="kthreadd project" GIT_COMMITTER_EMAIL="kthreadd@localhost" \
git -C "$REDOX_KERNEL" \
    -c core.abbrev=12 -c diff.noprefix=false -c diff.mnemonicPrefix=false \
    -c diff.relative=false -c diff.algorithm=myers -c diff.renames=true \
    -c diff.suppressBlankEmpty=false -c diff.context=3 -c diff.interHunkContext=0 \
    -c format.signature= -c format.numbered=auto \
    -c format.coverLetter=false -c format.useAutoBase=false -c i18n.logOutputEncoding=UTF-8 \
    format-patch --quiet --zero-commit --no-signature --no-color --no-binary --stat=80 \
    --output-directory "$tmp" "$BASE..$BRANCH" >/dev/null

for p in "$tmp"/*.patch; do
    sed -e '1,/^$/{
s/^From: .*/From: kthreadd project <kthreadd@localhost>/
s/^Date: .*/Date: Thu, 26 Nov 2026 00:00:00 +0000/
}' "$p" >"$p.fixed"
    mv "$p.fixed" "$p"
done

rm -f "$out"/[0-9][0-9][0-9][0-9]-*.patch
: >"$out/series"
for p in "$tmp"/*.patch; do
    name=$(basename "$p")
    cp "$p" "$out/$name"
    echo "$name" >>"$out/series"
done
echo "mkseries: wrote $count patches and series to $out"
