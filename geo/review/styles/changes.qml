<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.16-Białowieża" styleCategories="AllStyleCategories" labelsEnabled="0" readOnly="0" hasScaleBasedVisibilityFlag="0" minScale="100000000" maxScale="0" simplifyDrawingHints="1" simplifyDrawingTol="1" simplifyLocal="1" simplifyAlgorithm="0" simplifyMaxScale="1">
 <renderer-v2 type="categorizedSymbol" attr="異動区分" symbollevels="0" forceraster="0" enableorderby="0">
  <categories>
   <category render="true" symbol="0" value="新築" label="新築"/>
   <category render="true" symbol="1" value="増築" label="増築"/>
   <category render="true" symbol="2" value="滅失" label="滅失"/>
   <category render="true" symbol="3" value="建替" label="建替"/>
   <category render="true" symbol="4" value="その他の変化" label="その他の変化（候補外）"/>
   <category render="true" symbol="5" value="" label="その他"/>
  </categories>
  <symbols>
   <symbol name="0" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="227,26,28,110"/>
      <Option name="outline_color" type="QString" value="227,26,28,255"/>
      <Option name="outline_style" type="QString" value="solid"/>
      <Option name="outline_width" type="QString" value="0.4"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="227,26,28,110"/>
     <prop k="outline_color" v="227,26,28,255"/>
     <prop k="outline_style" v="solid"/>
     <prop k="outline_width" v="0.4"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
   <symbol name="1" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="255,127,0,110"/>
      <Option name="outline_color" type="QString" value="255,127,0,255"/>
      <Option name="outline_style" type="QString" value="solid"/>
      <Option name="outline_width" type="QString" value="0.4"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="255,127,0,110"/>
     <prop k="outline_color" v="255,127,0,255"/>
     <prop k="outline_style" v="solid"/>
     <prop k="outline_width" v="0.4"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
   <symbol name="2" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="31,120,180,110"/>
      <Option name="outline_color" type="QString" value="31,120,180,255"/>
      <Option name="outline_style" type="QString" value="solid"/>
      <Option name="outline_width" type="QString" value="0.4"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="31,120,180,110"/>
     <prop k="outline_color" v="31,120,180,255"/>
     <prop k="outline_style" v="solid"/>
     <prop k="outline_width" v="0.4"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
   <symbol name="3" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="106,61,154,110"/>
      <Option name="outline_color" type="QString" value="106,61,154,255"/>
      <Option name="outline_style" type="QString" value="solid"/>
      <Option name="outline_width" type="QString" value="0.4"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="106,61,154,110"/>
     <prop k="outline_color" v="106,61,154,255"/>
     <prop k="outline_style" v="solid"/>
     <prop k="outline_width" v="0.4"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
   <symbol name="4" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="150,150,150,60"/>
      <Option name="outline_color" type="QString" value="150,150,150,255"/>
      <Option name="outline_style" type="QString" value="dash"/>
      <Option name="outline_width" type="QString" value="0.4"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="150,150,150,60"/>
     <prop k="outline_color" v="150,150,150,255"/>
     <prop k="outline_style" v="dash"/>
     <prop k="outline_width" v="0.4"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
   <symbol name="5" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="200,200,200,90"/>
      <Option name="outline_color" type="QString" value="90,90,90,255"/>
      <Option name="outline_style" type="QString" value="solid"/>
      <Option name="outline_width" type="QString" value="0.5"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="200,200,200,90"/>
     <prop k="outline_color" v="90,90,90,255"/>
     <prop k="outline_style" v="solid"/>
     <prop k="outline_width" v="0.5"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
  </symbols>
  <source-symbol>
   <symbol name="0" type="fill" alpha="1" clip_to_extent="1" force_rhr="0">
    <layer class="SimpleFill" enabled="1" locked="0" pass="0">
     <Option type="Map">
      <Option name="color" type="QString" value="200,200,200,90"/>
      <Option name="outline_color" type="QString" value="90,90,90,255"/>
      <Option name="outline_style" type="QString" value="solid"/>
      <Option name="outline_width" type="QString" value="0.5"/>
      <Option name="outline_width_unit" type="QString" value="MM"/>
      <Option name="style" type="QString" value="solid"/>
      <Option name="joinstyle" type="QString" value="miter"/>
      <Option name="offset" type="QString" value="0,0"/>
      <Option name="offset_unit" type="QString" value="MM"/>
     </Option>
     <prop k="color" v="200,200,200,90"/>
     <prop k="outline_color" v="90,90,90,255"/>
     <prop k="outline_style" v="solid"/>
     <prop k="outline_width" v="0.5"/>
     <prop k="outline_width_unit" v="MM"/>
     <prop k="style" v="solid"/>
     <prop k="joinstyle" v="miter"/>
     <prop k="offset" v="0,0"/>
     <prop k="offset_unit" v="MM"/>
    </layer>
   </symbol>
  </source-symbol>
  <rotation/>
  <sizescale/>
 </renderer-v2>
 <fieldConfiguration>
  <field name="調査状況" configurationFlags="None">
   <editWidget type="ValueMap">
    <config>
     <Option type="Map">
      <Option name="map" type="List">
       <Option type="Map">
        <Option name="未確認" type="QString" value="未確認"/>
       </Option>
       <Option type="Map">
        <Option name="課税対象" type="QString" value="課税対象"/>
       </Option>
       <Option type="Map">
        <Option name="対象外" type="QString" value="対象外"/>
       </Option>
       <Option type="Map">
        <Option name="誤検出" type="QString" value="誤検出"/>
       </Option>
       <Option type="Map">
        <Option name="要再調査" type="QString" value="要再調査"/>
       </Option>
      </Option>
     </Option>
    </config>
   </editWidget>
  </field>
  <field name="調査日" configurationFlags="None">
   <editWidget type="DateTime">
    <config>
     <Option type="Map">
      <Option name="allow_null" type="bool" value="true"/>
      <Option name="calendar_popup" type="bool" value="true"/>
      <Option name="display_format" type="QString" value="yyyy-MM-dd"/>
      <Option name="field_format" type="QString" value="yyyy-MM-dd"/>
      <Option name="field_iso_format" type="bool" value="false"/>
     </Option>
    </config>
   </editWidget>
  </field>
 </fieldConfiguration>
 <aliases>
  <alias field="parcel_id" name="筆ID"/>
  <alias field="change_id" name="異動ID"/>
  <alias field="channel" name="検出種別"/>
  <alias field="change_type" name="異動区分(英)"/>
  <alias field="area_m2" name="面積㎡"/>
  <alias field="changed_area_m2" name="異動面積㎡"/>
  <alias field="score_max" name="確信度"/>
  <alias field="score_mean" name="平均確信度"/>
  <alias field="n_changes" name="異動件数"/>
  <alias field="priority" name="調査優先順位"/>
  <alias field="shares" name="異動内訳"/>
  <alias field="change_ids" name="異動ID一覧"/>
  <alias field="building_ids" name="既存家屋ID"/>
  <alias field="building_id" name="家屋ID"/>
  <alias field="status" name="処理状況"/>
  <alias field="label" name="教師ラベル"/>
  <alias field="footprint_score" name="滅失スコア"/>
  <alias field="candidate_id" name="候補ID"/>
  <alias field="調査状況" name="調査状況"/>
  <alias field="調査者" name="調査者"/>
  <alias field="調査日" name="調査日"/>
  <alias field="備考" name="備考"/>
  <alias field="parcel_ids" name="筆ID一覧"/>
 </aliases>
 <defaults>
  <default field="調査状況" expression="'未確認'" applyOnUpdate="0"/>
 </defaults>
 <editable>
  <field name="change_id" editable="0"/>
  <field name="channel" editable="0"/>
  <field name="change_type" editable="0"/>
  <field name="異動区分" editable="0"/>
  <field name="area_m2" editable="0"/>
  <field name="score_max" editable="0"/>
  <field name="score_mean" editable="0"/>
  <field name="地番" editable="0"/>
  <field name="所在" editable="0"/>
  <field name="地区" editable="0"/>
  <field name="parcel_ids" editable="0"/>
  <field name="building_ids" editable="0"/>
  <field name="検出状況" editable="0"/>
 </editable>
 <previewExpression/>
 <layerGeometryType>2</layerGeometryType>
</qgis>
