#!/usr/bin/env bash
# Builds the Flex Template spec from metadata.json and starts a streaming ingest job from it.
#
# usage: infra/dataflow/launch.sh   with PROJECT, REGION, BUCKET, IMAGE (the infra/dataflow/Dockerfile image,
#        pushed), BOOTSTRAP_SERVERS, TOPICS, QDRANT_URL set.
# Secrets (the Qdrant API key, Kafka SASL passwords) are not template parameters, which Dataflow shows in the
# job's details: bake them as EMBEDSTREAM_* variables into a private launcher image built FROM $IMAGE.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
: "${PROJECT:?}" "${REGION:?}" "${BUCKET:?}" "${IMAGE:?}" "${BOOTSTRAP_SERVERS:?}" "${TOPICS:?}" "${QDRANT_URL:?}"
spec="gs://$BUCKET/templates/embedstream-ingest.json"

gcloud dataflow flex-template build "$spec" \
  --project "$PROJECT" --image "$IMAGE" --sdk-language PYTHON --metadata-file "$here/metadata.json"

# ^~^ makes `~` the list separator, so the comma-separated topics stay one value.
gcloud dataflow flex-template run "embedstream-ingest-$(date +%Y%m%d-%H%M%S)" \
  --project "$PROJECT" --region "$REGION" --template-file-gcs-location "$spec" \
  --additional-experiments use_runner_v2 \
  --parameters "^~^bootstrap_servers=$BOOTSTRAP_SERVERS~topics=$TOPICS~qdrant_url=$QDRANT_URL~mode=stream~sdk_container_image=$IMAGE"
