/** What to pull or run: the repository at the pinned digest when there is one (a tag may have moved), else the image as named. */
export function pullRef(spec: { image: string; imageDigest: string | null }): string {
  return spec.imageDigest ? `${repositoryOf(spec.image)}@${spec.imageDigest}` : spec.image;
}

/** `host:port/a/b:tag@sha256:…` → `host:port/a/b` (a colon before the last slash is a port, not a tag). */
export function repositoryOf(image: string): string {
  const name = image.split('@')[0] ?? image;
  const colon = name.lastIndexOf(':');
  return colon > name.lastIndexOf('/') ? name.slice(0, colon) : name;
}
