# Vendored from SalesforceAIResearch/CoTA (https://github.com/SalesforceAIResearch/CoTA),
# commit 62d63c971eda854aae7deb061374095de6dd078e, licence CC-BY-NC-4.0 (LICENSE.md beside this file).
#
# TACO's own training-data builder, used by tests/test_export.py as the reference that every export
# row is compared with. Taken verbatim:
#   - cota/data_utils.py: reformat_text, load_msgs_in_example, convert_openai_data_to_mantis_format,
#     convert_mantis_example_into_llava_format (lines 10-19, 101-107, 181-231, 336-345);
#   - cota/preprocess_train_data.py: simple_task_goal (line 10).
# Changed: only the imports. data_utils.py starts with `from taco.config import *` (paths of the
# authors' machines, unused by these functions) and imports os and PIL's top-level package for
# functions left out.
import json
import pickle
import re

import numpy as np
from PIL import Image

simple_task_goal = """[BEGIN OF GOAL] You are a helpful assistant, and your goal is to solve the # USER REQUEST #. You can either rely on your own capabilities or perform actions with external tools to help you. You can use these actions: OCR, LocalizeObjects, GetObjects, EstimateRegionDepth, EstimateObjectDepth, Crop, ZoomIn, QueryLanguageModel, GetImageToImagesSimilarity, GetImageToTextsSimilarity, GetTextToImagesSimilarity, DetectFaces, QueryKnowledgeBase, Calculate, SolveMathEquation, Terminate. [END OF GOAL]"""

def reformat_text(text):
    pattern = r'#\s*STEP\s*\d?\s*#\:?' # to match one of these: `# STEP 1 #:`, `# STEP #:`, `#STEP 1#:`, `#STEP#:`, or `#STEP#`
    match = re.search(pattern, text)
    if match:
        end_index = match.end()
        text = text[end_index:]
    text = text.replace("```", "")
    text = text.replace("json", "")
    text = text.replace("\n", "")
    return text
def load_msgs_in_example(example):
    if isinstance(example['all_messages'], list):
        return example['all_messages']
    all_msgs_path = example['all_messages']
    all_msgs = pickle.load(open(all_msgs_path, 'rb'))
    msgs = all_msgs['user_agent']
    return msgs

def convert_openai_data_to_mantis_format(example, id, metadata, add_task_inst=True):
    mantis_example = {'id': f"{metadata['dataset']}-{id}", 'conversation': [], 'metadata': metadata, 'images': []}
    
    images = eval(example['images']) if isinstance(example['images'], str) else example['images']
    msgs = load_msgs_in_example(example)
    convos = []
    total_image_num = 0
    for i, msg in enumerate(msgs):
        convo = {}
        convo['role'] = msg['role']
        if add_task_inst and i == 0 and convo['role'] == "user":
            convo_content = metadata['task_instruction'] + '\n'
        else:
            convo_content = "" 
        
        for j, content in enumerate(msg['content']):
            if content['type'] == "text":

                text = content['text']
                convo_content += text + '\n'
            elif content['type'] == "image_url":
                pil_image = content['image_url']['url']
                image_path = images[total_image_num]
                if  metadata['dataset'].startswith('mantis-coinstruct') or metadata['dataset'] in ['mantis-spot-the-diff', 'mantis-birds-to-words', 'mantis-dreamsim', 'mantis-iconqa', 'mantis-multi_vqa', 'mantis-nlvr2', 'mantis-lrv_multi']:
                    image_path = image_path.replace("/export/share/jieyu/mantis_data", "/export/agentstudio-family/zixian/mantis_data") # metadata['dataset'].startswith('mantis-llava_665k_multi')
                    images[total_image_num] = image_path
                image = Image.open(image_path).convert("RGB")
                arr1 = np.array(pil_image)
                arr2 = np.array(image)
                assert np.array_equal(arr1, arr2), f"image1: {arr1}\nimage2: {arr2}"
                convo_content += f'<image>\n' #image-{image_id}:
                total_image_num += 1
            else:
                raise NotImplementedError
        
        if convo['role'] == 'assistant':
            convo_content = reformat_text(convo_content)
            try:
                parsed_content = json.loads(convo_content)
            except Exception as e:
                print(f"{id} CONVO:", convo_content)
                print(e)
                return None
        convo['content'] = convo_content
        convos.append(convo)
    if total_image_num != len(images):
        print(f"found different image nums: {total_image_num} != {len(images)}")
        return None
    mantis_example['conversation'] = convos
    mantis_example['images'] = images
    return mantis_example

def convert_mantis_example_into_llava_format(example):
    new_example = {'sample_id': example['id'], 'image': example['images'], 'metadata': example['metadata']}
    new_convos = []
    for convo in example['conversation']:
        new_convo = {'from': 'human' if convo['role'] == 'user' else 'gpt', 'value': convo['content']}
        new_convos.append(new_convo)
    new_example['conversations'] = new_convos
    new_example['choice_list'] = None
    return new_example